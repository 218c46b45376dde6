"""Trust boundaries on the real API server: what a commit to one environment can and cannot change.

An attacker with commit access to one environment's overlay adds objects outside it: a
ClusterRoleBinding to cluster-admin, a Deployment in another tenant's namespace, the daemon's own
ConfigMap and Secrets. Every such revision is refused whole, before any write (counted in the API
server's audit log), and nothing of the environment is pruned. With impersonation, the cluster's RBAC
is a second wall: even a too-wide policy is stopped by the API server during validation.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reconciler.inventory import InventoryEntry, InventoryStore
from reconciler.kube import KubeClient
from reconciler.kube.cache import LiveCache
from reconciler.kube.errors import NotFoundError
from reconciler.objects import Action, ObjectKey
from reconciler.render import Renderer
from reconciler.sync import Engine, SyncOptions, SyncResult
from reconciler.tenancy import AccessPolicy
from tests.helpers import eventually
from tests.support import AuditLog, EnvRepo, config_map, create_deployer, deployment

pytestmark = pytest.mark.cluster
DAEMON_NAMESPACE = "reconciler-system"


@pytest.fixture
async def other_tenant(kube: KubeClient, namespace: str) -> AsyncIterator[str]:
    """Another tenant's namespace, with a Deployment of its own."""
    name = f"{namespace}-other"
    await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    try:
        yield name
    finally:
        await kube.request("DELETE", f"/api/v1/namespaces/{name}")


async def sync(engine: Engine, repo: EnvRepo, policy: AccessPolicy) -> SyncResult:
    options = SyncOptions(environment=repo.name, health_timeout=60, policy=policy)
    return await engine.sync_directory(repo.root, repo.path, repo.options, options)


def hostile_objects(tenant: str, other: str) -> list[dict[str, Any]]:
    """What a hostile commit to the tenant's overlay adds."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{tenant}-takeover"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": tenant}],
        },
        deployment("intruder", other),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "reconciler-webhooks", "namespace": DAEMON_NAMESPACE},
            "stringData": {"github": "attacker-chosen-webhook-secret-0123456789"},
        },
        config_map("reconciler-config", DAEMON_NAMESPACE, **{"config.yaml": "promotions: {}"}),
    ]


async def exists(kube: KubeClient, api_version: str, kind: str, namespace: str, name: str) -> bool:
    return await kube.get(api_version, kind, namespace, name) is not None


async def test_a_tenant_commit_outside_its_policy_is_refused_with_zero_writes_and_no_prune(
    engine: Engine, repo: EnvRepo, kube: KubeClient, audit: AuditLog, namespace: str, other_tenant: str
) -> None:
    """A ClusterRoleBinding to cluster-admin, a Deployment in another tenant's namespace and the daemon's
    own ConfigMap and Secret, added to a tenant's overlay (which also drops one of its objects), refuse
    the whole revision: every offending object is named with its rule, the API server logs zero writes,
    the dropped object is not pruned, and the tenant's policy is said to live in the configuration."""
    await kube.ensure_namespace(DAEMON_NAMESPACE)
    policy = AccessPolicy(namespaces=(namespace,), reserved_namespaces=frozenset({DAEMON_NAMESPACE}))
    repo.set_objects([config_map("kept", namespace), config_map("dropped", namespace)])
    first = await sync(engine, repo, policy)
    assert first.ok, first.message

    repo.set_objects([config_map("kept", namespace), *hostile_objects(namespace, other_tenant)])
    since = audit.mark()
    refused = await sync(engine, repo, policy)

    assert (refused.condition, refused.reason) == ("Stalled", "PolicyViolation")
    assert sorted((str(v.key), v.rule) for v in refused.violations) == sorted(
        [
            (f"ClusterRoleBinding/{namespace}-takeover", "cluster-scoped"),
            (f"Deployment/{other_tenant}/intruder", "namespace"),
            (f"Secret/{DAEMON_NAMESPACE}/reconciler-webhooks", "reserved"),
            (f"ConfigMap/{DAEMON_NAMESPACE}/reconciler-config", "reserved"),
        ]
    )
    for violation in refused.violations:
        assert str(violation.key) in refused.message
    assert "nothing was written" in refused.message
    assert "attacker-chosen-webhook-secret" not in refused.message
    assert await audit.writes(kube, since) == {}
    assert await exists(kube, "v1", "ConfigMap", namespace, "dropped"), "a refused revision must not prune"
    assert not await exists(
        kube, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", f"{namespace}-takeover"
    )
    assert not await exists(kube, "apps/v1", "Deployment", other_tenant, "intruder")


async def test_no_environment_can_write_the_daemon_namespace_or_kinds_even_unrestricted(
    engine: Engine, repo: EnvRepo, kube: KubeClient, audit: AuditLog, namespace: str
) -> None:
    """Even the one-shot CLI's unrestricted policy refuses objects in the daemon's namespace (its
    configuration, webhook Secret, inventories) and reconciler's own kinds, before any write."""
    await kube.ensure_namespace(DAEMON_NAMESPACE)
    environment_object = {
        "apiVersion": "reconciler.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "production", "namespace": namespace},
        "spec": {"path": "elsewhere"},
    }
    repo.set_objects(
        [
            config_map("innocent", namespace),
            config_map("reconciler-config", DAEMON_NAMESPACE, **{"config.yaml": "environments: []"}),
            config_map(f"inventory-{namespace}", DAEMON_NAMESPACE),
            environment_object,
        ]
    )
    since = audit.mark()
    options = SyncOptions(environment=repo.name, health_timeout=60)  # the CLI's default: unrestricted
    result = await engine.sync_directory(repo.root, repo.path, repo.options, options)
    assert (result.condition, result.reason) == ("Stalled", "PolicyViolation"), result.message
    assert {v.rule for v in result.violations} == {"reserved"}
    assert len(result.violations) == 3
    assert await audit.writes(kube, since) == {}
    assert not await exists(kube, "v1", "ConfigMap", namespace, "innocent")


async def test_default_policy_allows_only_namespaces_the_render_creates(
    engine: Engine, repo: EnvRepo, kube: KubeClient, audit: AuditLog, namespace: str, other_tenant: str
) -> None:
    """Without configured namespaces, a render may fill the namespace it creates, but declaring an
    existing namespace it does not manage (another tenant's) does not make that namespace its own."""
    own = f"{namespace}-own"
    policy = AccessPolicy(reserved_namespaces=frozenset({DAEMON_NAMESPACE}))
    repo.set_objects(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": own}}, config_map("c", own)]
    )
    try:
        created = await sync(engine, repo, policy)
        assert created.ok, created.message
        again = await sync(engine, repo, policy)  # its own namespace stays its own once it exists
        assert again.ok, again.message

        repo.set_objects(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": own}},
                config_map("c", own),
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": other_tenant, "annotations": {"reconciler.dev/adopt": "true"}},
                },
                config_map("planted", other_tenant),
            ]
        )
        since = audit.mark()
        refused = await sync(engine, repo, policy)
        assert refused.reason == "PolicyViolation", refused.message
        assert sorted(str(v.key) for v in refused.violations) == [
            f"ConfigMap/{other_tenant}/planted",
            f"Namespace/{other_tenant}",
        ]
        assert await audit.writes(kube, since) == {}
    finally:
        await engine.close()
        with contextlib.suppress(NotFoundError):
            await kube.delete("v1", "Namespace", "", own)


@pytest.fixture
async def deployer(kube: KubeClient, namespace: str) -> str:
    """A ServiceAccount that may write ConfigMaps in the test's namespace only (and read it)."""
    return await create_deployer(kube, namespace)


async def test_with_impersonation_the_api_server_refuses_what_a_too_wide_policy_lets_through(
    kube: KubeClient, repo: EnvRepo, audit: AuditLog, namespace: str, other_tenant: str, deployer: str
) -> None:
    """A policy that allows every namespace and kind, but syncs as a ServiceAccount that may only write
    ConfigMaps in its own namespace: the API server answers 403 during validation (the dry-runs), so
    nothing is written; the same render without the foreign object syncs as that identity."""
    cache = LiveCache(kube)  # watches and inventories stay the daemon's own, as in the daemon
    engine = Engine(
        kube.impersonating(deployer), inventory=InventoryStore(kube), cache=cache, renderer=Renderer()
    )
    wide = AccessPolicy(namespaces=("*",), cluster_scoped=("*",))
    try:
        await RBACReady(kube, namespace, deployer).wait()
        repo.set_objects([config_map("mine", namespace), config_map("theirs", other_tenant)])
        since = audit.mark()
        refused = await sync(engine, repo, wide)
        assert (refused.condition, refused.reason) == ("Stalled", "ValidationFailed"), refused.message
        assert "forbidden" in refused.message.lower()
        assert f"ConfigMap/{other_tenant}/theirs" in refused.message
        assert await audit.writes(kube, since) == {}

        repo.set_objects([config_map("mine", namespace)])
        allowed = await sync(engine, repo, wide)
        assert allowed.ok, allowed.message
        live = await kube.get("v1", "ConfigMap", namespace, "mine")
        assert live is not None
        writers = {entry.get("manager") for entry in live["metadata"].get("managedFields", [])}
        assert "reconciler" in writers
    finally:
        await engine.close()
        await cache.close()


class RBACReady:
    """Waits until the API server's RBAC cache grants the new Role (SubjectAccessReview)."""

    def __init__(self, kube: KubeClient, namespace: str, user: str) -> None:
        self.kube, self.namespace, self.user = kube, namespace, user

    async def wait(self) -> None:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": self.user,
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": "patch",
                    "resource": "configmaps",
                },
            },
        }

        async def allowed() -> bool:
            answer = await self.kube.request(
                "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
            )
            return bool((answer.get("status") or {}).get("allowed"))

        await eventually(allowed, timeout=30, what=f"RBAC to grant {self.user}")


async def test_secret_values_never_appear_in_api_server_validation_errors(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Secrets the API server refuses (a dockerconfigjson that is not JSON, a bad key, a value of the
    wrong type, which server-side apply prints back) never have a value in the sync's message or
    ChangeSet, whatever the server quotes back, and are a validation failure, not a retried outage."""
    canary = "canary-7f3a9d1e-never-print-me"
    broken = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull", "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(f"{{not json {canary}".encode()).decode()},
    }
    bad_key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys", "namespace": namespace},
        "stringData": {"bad key!": canary},
    }
    typed = {  # server-side apply's type errors print the value they could not type
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "typed", "namespace": namespace},
        "stringData": {"nested": {"inner": canary}},
    }
    repo.set_objects([broken, bad_key, typed])
    result = await sync(engine, repo, AccessPolicy(unrestricted=True))
    assert result.reason == "ValidationFailed", result.message
    text = result.message + json.dumps([e.message for e in result.changeset.entries])
    assert canary not in text
    assert base64.b64encode(canary.encode()).decode()[:16] not in text
    assert f"Secret/{namespace}/typed" in result.message
    assert f"Secret/{namespace}/pull" in result.message


async def test_an_inventory_entry_in_the_daemon_namespace_is_never_pruned(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """An inventory recorded before the daemon's namespace was reserved (an object an environment once
    wrote there) never makes a prune delete it: it is skipped and dropped from the inventory."""
    await kube.ensure_namespace(DAEMON_NAMESPACE)
    target = f"daemon-owned-{namespace}"[:60]
    await kube.apply(config_map(target, DAEMON_NAMESPACE))
    try:
        repo.set_objects([config_map("app", namespace)])
        assert (await sync(engine, repo, AccessPolicy(unrestricted=True))).ok
        inventory = await engine.inventory.load(repo.name)
        assert inventory is not None
        inventory.entries[ObjectKey("", "ConfigMap", DAEMON_NAMESPACE, target)] = InventoryEntry(
            "v1", ObjectKey("", "ConfigMap", DAEMON_NAMESPACE, target)
        )
        await engine.inventory.save(repo.name, inventory)

        result = await sync(engine, repo, AccessPolicy(unrestricted=True))
        assert result.ok, result.message
        skipped = {str(e.key): e.message for e in result.changeset.entries if e.action == Action.SKIPPED}
        assert "belongs to the daemon" in skipped[f"ConfigMap/{DAEMON_NAMESPACE}/{target}"]
        assert await exists(kube, "v1", "ConfigMap", DAEMON_NAMESPACE, target)
        after = await engine.inventory.load(repo.name)
        assert after is not None
        assert ObjectKey("", "ConfigMap", DAEMON_NAMESPACE, target) not in after.entries
    finally:
        with contextlib.suppress(NotFoundError):
            await kube.delete("v1", "ConfigMap", DAEMON_NAMESPACE, target)
