"""Fixtures for unit tests that need a daemon object but no cluster, Git server or kustomize."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.daemon import Daemon
from reconciler.settings import parse


@pytest.fixture
def offline_daemon(tmp_path: Path) -> Daemon:
    """A daemon built from a minimal valid configuration and never started (nothing is contacted)."""
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "secret").write_text("a-long-random-webhook-secret\n")
    settings = parse(
        {
            "repository": {"url": "https://git.example.com/envs.git"},
            "clusters": [{"name": "local", "kubeconfig": "kubeconfig"}],
            "environments": [{"name": "staging", "path": "environments/staging"}],
            "webhooks": {"github": {"secret_file": "secret"}},
            "cache_dir": str(tmp_path / "cache"),
        },
        tmp_path,
        environ={},
    )
    return Daemon(settings, kustomize=Path("/bin/false"))
