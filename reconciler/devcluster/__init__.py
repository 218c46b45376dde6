"""The local Kubernetes control plane for the demo and the tests.

``build`` compiles and caches the pinned binaries, ``pki`` makes certificates, ``cluster`` starts,
checks and stops one named cluster. Nothing here is used by the daemon in production.
"""

from reconciler.devcluster.build import Toolchain, cache_root, ensure_toolchain
from reconciler.devcluster.cluster import Cluster, ClusterStatus, list_clusters
from reconciler.devcluster.errors import DevClusterError

__all__ = [
    "Cluster",
    "ClusterStatus",
    "DevClusterError",
    "Toolchain",
    "cache_root",
    "ensure_toolchain",
    "list_clusters",
]
