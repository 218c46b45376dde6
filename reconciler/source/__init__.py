"""Where desired state comes from: a local mirror of the environments repository and immutable
snapshots of single revisions, rendered from disk."""

from reconciler.source.git import GitError, GitSource

__all__ = ["GitError", "GitSource"]
