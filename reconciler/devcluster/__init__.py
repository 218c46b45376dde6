"""The local Kubernetes control plane for the demo and the tests.

``build`` compiles and caches the pinned binaries, ``pki`` makes certificates, ``cluster`` starts,
checks and stops one named cluster. Nothing here is used by the daemon in production.

The names below load their modules on first use: ``reconciler sync`` and ``render`` only need
``build.toolchain_paths`` (where the pinned kustomize is), not the certificate and process machinery
of ``cluster`` (cryptography alone is a tenth of a second of start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.devcluster.build import Toolchain, cache_root, ensure_toolchain
    from reconciler.devcluster.cluster import Cluster, ClusterStatus, list_clusters
    from reconciler.devcluster.errors import DevClusterError

_WHERE = {
    "Toolchain": "build",
    "cache_root": "build",
    "ensure_toolchain": "build",
    "Cluster": "cluster",
    "ClusterStatus": "cluster",
    "list_clusters": "cluster",
    "DevClusterError": "errors",
}

__all__ = [
    "Cluster",
    "ClusterStatus",
    "DevClusterError",
    "Toolchain",
    "cache_root",
    "ensure_toolchain",
    "list_clusters",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
