"""reconciler's own CustomResourceDefinitions (``*.yaml`` beside this module) and their installation.

Each CRD of the ``reconciler.dev`` group ships here as package data and, identically, in
``deploy/base/crds/`` (a unit test keeps the two equal). In a cluster the CRDs come from ``deploy/``
and the daemon's least-privilege identity may not write CRDs at all (``install_crds: false``); for the
demo and the tests the daemon installs them at start (``install_crds: true``, the default), with
server-side apply under its own field manager, and waits until they are Established.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from reconciler import retry
from reconciler.kube.client import ApplyOptions, KubeClient
from reconciler.kube.errors import KubeError

FIELD_MANAGER = "reconciler-crds"
GROUP = "reconciler.dev"


def manifests() -> list[dict[str, Any]]:
    """Every CRD shipped with the package, sorted by file name."""
    files = sorted(
        (f for f in resources.files(__name__).iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name
    )
    return [yaml.safe_load(f.read_text(encoding="utf-8")) for f in files]


async def ensure(client: KubeClient, timeout: float = 60.0) -> list[str]:
    """Apply every shipped CRD and wait until each is Established; returns their names.

    Raises ``KubeError`` when the API server refuses (for example 403 for an identity without CRD
    rights: then install them from deploy/ and set ``install_crds: false``).
    """
    names: list[str] = []
    for crd in manifests():
        await client.apply(crd, ApplyOptions(field_manager=FIELD_MANAGER, force=True))
        names.append(str(crd["metadata"]["name"]))
    pending = set(names)

    async def established() -> None:
        for name in sorted(pending):
            live = await client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name)
            conditions = ((live or {}).get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if pending:
            raise retry.NotYet

    try:
        await retry.until(established, timeout)
    except retry.NotYet:
        raise KubeError(
            f"CustomResourceDefinition/{sorted(pending)[0]}", f"not Established within {timeout:.0f} s"
        ) from None
    for crd in manifests():
        spec = crd["spec"]
        for version in spec["versions"]:
            client.forget(f"{spec['group']}/{version['name']}")
    return names
