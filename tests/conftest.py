"""Session-wide fixtures: one local control plane per test run, one namespace per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from reconciler.devcluster import Cluster, ensure_toolchain
from reconciler.devcluster.build import Toolchain
from reconciler.kube import KubeClient
from tests.support import AuditLog


def _log(message: str) -> None:
    print(f"[dev-cluster] {message}", flush=True)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """The pinned binaries (built into the cache on first use)."""
    return ensure_toolchain(_log)


@pytest.fixture(scope="session")
def cluster(toolchain: Toolchain) -> Iterator[Cluster]:
    """One local cluster shared by every test of the session, removed at the end."""
    local = Cluster(f"pytest-{os.getpid()}")
    local.up(_log, toolchain=toolchain)
    try:
        yield local
    finally:
        local.down(_log)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    """Path of the session cluster's admin kubeconfig."""
    return cluster.kubeconfig_path


@pytest.fixture(scope="session")
async def api_client(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """A kubernetes-asyncio client authenticated as the cluster admin."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration=configuration) as api:
        yield api


@pytest.fixture
async def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    base = request.node.name.lower().replace("_", "-")
    base = "".join(ch for ch in base if ch.isalnum() or ch == "-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(api_client)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        await core.delete_namespace(name)


@pytest.fixture(scope="session")
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    """reconciler's own client, bound to the session cluster as admin."""
    async with await KubeClient.from_kubeconfig(kubeconfig) as connection:
        yield connection


@pytest.fixture(scope="session")
def audit(cluster: Cluster) -> AuditLog:
    """The session cluster's audit log of writes: who wrote what, as the API server saw it."""
    return AuditLog(cluster.audit_log_path)
