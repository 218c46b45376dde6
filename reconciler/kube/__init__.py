"""Kubernetes I/O: one client wrapper (discovery, server-side apply, get, list, delete, watch), watch
caches of live objects, and our own error types. Nothing else in reconciler talks to an API server."""

from reconciler.kube.client import ApplyOptions, KubeClient, ResourceInfo
from reconciler.kube.errors import (
    ConflictError,
    ForbiddenError,
    ImmutableFieldError,
    InvalidError,
    KubeError,
    NoMatchError,
    NotFoundError,
    TransientError,
)

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
