"""Kubernetes I/O: one client wrapper (discovery, server-side apply, get, list, delete, watch), watch
caches of live objects, and our own error types. Nothing else in reconciler talks to an API server."""

# isort: off
from reconciler.kube import lean  # before the library's first import: see its docstring

lean.install()
from reconciler.kube.client import ApplyOptions, KubeClient, ResourceInfo  # noqa: E402
from reconciler.kube.errors import (  # noqa: E402
    ConflictError,
    ForbiddenError,
    ImmutableFieldError,
    InvalidError,
    KubeError,
    NoMatchError,
    NotFoundError,
    TransientError,
)

# isort: on

__all__ = [
    "ApplyOptions",
    "ConflictError",
    "ForbiddenError",
    "ImmutableFieldError",
    "InvalidError",
    "KubeClient",
    "KubeError",
    "NoMatchError",
    "NotFoundError",
    "ResourceInfo",
    "TransientError",
]
