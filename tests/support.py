"""Helpers for integration tests: environment repositories on disk and API server write counts."""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.kube import KubeClient
from reconciler.render import RenderOptions

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE"})
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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


async def apiserver_writes(kube: KubeClient, resources: set[str]) -> Counter[str]:
    """Non-dry-run writes to the main resource (not subresources) of ``resources``, by verb.

    Read from the API server's own ``apiserver_request_total``, so it counts what the server saw, not
    what our client believes it sent.
    """
    counts: Counter[str] = Counter()
    for line in (await kube.text("/metrics")).splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group("labels")))
        if (
            labels.get("verb") in WRITE_VERBS
            and labels.get("resource") in resources
            and not labels.get("subresource")
            and not labels.get("dry_run")
        ):
            counts[labels["verb"]] += int(float(match.group("value")))
    return counts


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
