"""The API server restarts in the middle of a sync; the daemon converges afterwards."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devcluster import Cluster
from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import Repo, daemon_config
from tests.e2e.test_daemon import environment_files
from tests.helpers import wait_for
from tests.support import config_map, deployment

pytestmark = pytest.mark.cluster


def get_object(cluster: Cluster, path: str) -> dict[str, object]:
    """GET one object as the admin ({} when it does not exist or the server does not answer)."""
    context = ssl.create_default_context(cafile=str(cluster.pki_paths.ca_cert))
    context.load_cert_chain(str(cluster.pki_paths.admin_cert), str(cluster.pki_paths.admin_key))
    state = cluster.load_state()
    assert state is not None
    try:
        with urllib.request.urlopen(state.server + path, context=context, timeout=5) as response:  # noqa: S310
            data: dict[str, object] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError):
        return {}


@pytest.fixture
def own_cluster(toolchain: Toolchain) -> Iterator[Cluster]:
    """A cluster of this test's own, so restarting its API server disturbs no other test."""
    cluster = Cluster(f"restart-{os.getpid()}")
    cluster.up(lambda _: None, nodes=1, toolchain=toolchain)
    try:
        yield cluster
    finally:
        cluster.down(lambda _: None)


def test_api_server_restart_during_a_sync_converges(
    tmp_path: Path, repo: Repo, toolchain: Toolchain, own_cluster: Cluster
) -> None:
    """Push 150 objects, restart kube-apiserver while they are being applied, and still converge."""
    namespace = "restart-test"
    environment_files(repo, namespace)
    repo.write(
        "apps/base/ns.yaml", [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    )
    repo.write("apps/base/kustomization.yaml", "resources: [ns.yaml, app.yaml]\n")
    repo.commit_and_push("initial")
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=own_cluster.kubeconfig_path,
        environments=[{"name": "restart", "path": "apps/staging"}],
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    daemon.start(toolchain)
    try:
        wait_for(
            lambda: daemon.environment("restart").get("condition") == "Ready",
            timeout=60,
            what="the first sync",
        )
        # the new revision: a Deployment in wave 0 (its health gates the next wave) and 150 objects in wave 1
        gate = deployment("gate", namespace)
        gate["metadata"]["annotations"] = {"reconciler.dev/wave": "0"}
        gate["spec"]["minReadySeconds"] = (
            4  # holds wave 1 back for a few seconds: the restart lands in between
        )
        many = [config_map(f"cm-{i:03d}", namespace, payload="x" * 2000) for i in range(150)]
        for item in many:
            item["metadata"]["annotations"] = {"reconciler.dev/wave": "1"}
        repo.write("apps/base/more.yaml", [gate, *many])
        repo.write("apps/base/kustomization.yaml", "resources: [ns.yaml, app.yaml, more.yaml]\n")
        sha = repo.commit_and_push("a gated wave of 150 more objects")
        wait_for(
            lambda: get_object(own_cluster, f"/apis/apps/v1/namespaces/{namespace}/deployments/staging-gate"),
            interval=0.01,
            what="wave 0 to be applied",
        )
        assert not get_object(own_cluster, f"/api/v1/namespaces/{namespace}/configmaps/staging-cm-000")
        own_cluster.restart("kube-apiserver", lambda _: None)  # mid-sync: between wave 0 and wave 1
        status = wait_for(
            lambda: (
                (s := daemon.environment("restart"))
                and s["revision"] == sha
                and s["condition"] == "Ready"
                and s
            ),
            timeout=120,
            what="convergence after the API server restart",
        )
        assert status["health"] == "Healthy"
        assert get_object(own_cluster, f"/api/v1/namespaces/{namespace}/configmaps/staging-cm-149")
        assert daemon.get_status("/readyz") == 200
    finally:
        assert daemon.stop() == 0
