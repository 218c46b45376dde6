"""Helpers for integration tests: environment repositories on disk and the API server's record of writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler.kube import KubeClient
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import USER_AGENT
from reconciler.kube.errors import NotFoundError
from reconciler.promotion import sshsig
from reconciler.promotion.policy import Approver
from reconciler.promotion.signing import KEY_HEADER, SIGNATURE_HEADER
from reconciler.promotion.sshsig import parse_allowed_signers
from reconciler.render import Renderer, RenderOptions
from reconciler.sync import Engine

AUDIT_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class EnvRepo:
    """An environments repository in a temporary directory, edited by tests."""

    root: Path
    name: str
    options: RenderOptions
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The environment's directory."""
        return self.root / self.name

    def set_objects(self, objects: list[dict[str, Any]], extra: str = "") -> None:
        """Write the environment as one file per object plus a kustomization listing them."""
        self.path.mkdir(parents=True, exist_ok=True)
        for old in self.path.glob("*.yaml"):
            old.unlink()
        names = []
        for index, obj in enumerate(objects):
            name = f"{index:03d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            (self.path / name).write_text(yaml.safe_dump(obj, sort_keys=False))
            names.append(name)
        (self.path / "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": names}, sort_keys=False) + textwrap.dedent(extra)
        )

    def write(self, relative: str, text: str) -> None:
        """Write any file of the environment."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())


@dataclass
class AuditLog:
    """The local API server's audit log (writes only, see ``reconciler.devcluster.cluster.AUDIT_POLICY``).

    Unlike ``apiserver_request_total`` it names the client (user agent) and the object of each write, so
    a count is not disturbed by the controllers and namespace clean-ups that run beside a test.
    """

    path: Path

    def mark(self) -> int:
        """A position in the log; ``writes`` counts what was logged after it."""
        return self.path.stat().st_size if self.path.exists() else 0

    async def writes(
        self,
        kube: KubeClient,
        since: int,
        *,
        user_agent: str = USER_AGENT,
        resources: set[str] | None = None,
    ) -> Counter[str]:
        """Non-dry-run writes by clients whose user agent starts with ``user_agent`` since ``since``, by
        verb (main resources only; ``resources`` narrows it further).

        A marker request (a DELETE of a ConfigMap that does not exist) is sent first and waited for, so
        every request that completed before this call is in the log when it is read.
        """
        marker = f"audit-marker-{secrets.token_hex(8)}"
        with contextlib.suppress(NotFoundError):
            await kube.request("DELETE", f"/api/v1/namespaces/default/configmaps/{marker}")
        deadline = time.monotonic() + 10
        while True:
            events = self._events(since)
            if any((e.get("objectRef") or {}).get("name") == marker for e in events):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the audit marker {marker} never reached {self.path}")
            await asyncio.sleep(0.05)
        counts: Counter[str] = Counter()
        for event in events:
            ref = event.get("objectRef") or {}
            if (
                str(event.get("userAgent", "")).startswith(user_agent)
                and str(event.get("verb")) in AUDIT_WRITE_VERBS
                and not ref.get("subresource")
                and "dryRun=" not in str(event.get("requestURI", ""))
                and ref.get("name") != marker
                and (resources is None or ref.get("resource") in resources)
            ):
                counts[str(event["verb"])] += 1
        return counts

    def _events(self, since: int) -> list[dict[str, Any]]:
        with self.path.open("rb") as handle:
            handle.seek(since)
            data = handle.read()
        # only whole lines: the server may be in the middle of writing the last one
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def running_engine(kube: KubeClient) -> AsyncIterator[Engine]:
    """An engine with warm watch caches, as the daemon runs it. Closed before a test's clean-up, so
    that its drift correction does not re-create what the clean-up deletes."""
    cache = LiveCache(kube)
    engine = Engine(kube, cache=cache, renderer=Renderer())
    try:
        yield engine
    finally:
        await engine.close()
        await cache.close()


def deployment(
    name: str,
    namespace: str,
    image: str = "registry.invalid/app:1",
    replicas: int = 1,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment manifest that kwok can make Available."""
    selector = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def config_map(name: str, namespace: str, **data: str) -> dict[str, Any]:
    """A ConfigMap manifest."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data or {"key": name},
    }


def custom_resource_definition(group: str, kind: str, spec_schema: dict[str, Any]) -> dict[str, Any]:
    """A namespaced CRD serving and storing ``v1`` of ``kind`` (plural: lower-case kind + "s"), whose
    ``spec`` follows ``spec_schema``."""
    singular = kind.lower()
    schema = {"type": "object", "properties": {"spec": spec_schema}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{singular}s.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": f"{singular}s", "singular": singular, "kind": kind},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


@dataclass(frozen=True)
class ApproverKey:
    """An approver's own SSH key pair (ed25519, OpenSSH format), as a person would have in ~/.ssh."""

    identity: str
    private_key: Path
    public_line: str

    @classmethod
    def create(cls, directory: Path, identity: str) -> ApproverKey:
        """A fresh key pair written under ``directory`` (mode 0600, as ssh-keygen leaves it)."""
        key = ed25519.Ed25519PrivateKey.generate()
        path = directory / f"{identity.split('@', maxsplit=1)[0]}_ed25519"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        line = f"{public.decode()} {identity}"
        path.with_name(path.name + ".pub").write_text(line + "\n")
        return cls(identity, path, line)

    def headers(self, body: bytes, key_id: str = "") -> dict[str, str]:
        """The signature headers of ``body`` signed with this key."""
        armored = sshsig.sign_with_key(self.private_key, body)
        return {KEY_HEADER: key_id or self.identity, SIGNATURE_HEADER: sshsig.header_value(armored)}

    def approver(self, groups: frozenset[str] = frozenset()) -> Approver:
        """The policy entry of this approver."""
        return Approver(
            self.identity, tuple(parse_allowed_signers(f'"{self.identity}" {self.public_line}')), groups
        )


async def create_deployer(kube: KubeClient, namespace: str, name: str = "deployer") -> str:
    """A ServiceAccount that may manage ConfigMaps in ``namespace`` only; its impersonation user name."""
    await kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": name}}
    )
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    verbs = ["get", "list", "watch", "create", "patch", "delete"]
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]
    await kube.request("POST", f"{rbac}/roles", body={"metadata": {"name": name}, "rules": rules})
    await kube.request(
        "POST",
        f"{rbac}/rolebindings",
        body={
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    return f"system:serviceaccount:{namespace}:{name}"
