"""Fixtures shared by the real-cluster tests of the engine: an environments repository named after the
test's namespace, and an engine with warm watch caches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.kube import KubeClient
from reconciler.render import RenderOptions
from reconciler.sync import Engine
from tests.support import EnvRepo, running_engine


@pytest.fixture
def repo(tmp_path: Path, namespace: str, toolchain: Toolchain) -> EnvRepo:
    """An environments repository whose environment is named after the test's namespace."""
    return EnvRepo(tmp_path, namespace, RenderOptions(kustomize=toolchain.kustomize, timeout=30))


@pytest.fixture
async def engine(kube: KubeClient) -> AsyncIterator[Engine]:
    """An engine with warm watch caches, as the daemon runs it."""
    async with running_engine(kube) as running:
        yield running
