"""deploy/: valid against the API server, and its RBAC is both sufficient and not excessive."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster import Cluster
from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import DaemonProcess, Repo, daemon_config
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
PODS = ["reconciler-rbac-test-0", "reconciler-rbac-test-1"]  # two replicas' pod names: identities


def kubectl(toolchain: Toolchain, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_deploy_passes_a_server_side_dry_run(toolchain: Toolchain, kubeconfig: Path) -> None:
    """kubectl apply --dry-run=server -k deploy/ is accepted by the API server.

    kubectl's dry-run cannot validate objects in a namespace it would only create, so the namespace is
    created first (reconciler's own validation works around that with a stand-in namespace).
    """
    namespace = kubectl(toolchain, kubeconfig, "create", "namespace", "reconciler-system")
    assert namespace.returncode == 0 or "AlreadyExists" in namespace.stderr, namespace.stderr
    result = kubectl(toolchain, kubeconfig, "apply", "--dry-run=server", "-k", str(ROOT / "deploy"))
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/reconciler" in result.stdout


def request_as(
    server: str, ca: Path, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - our own https API server
        server + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def deployed_config() -> dict[str, Any]:
    """The daemon's configuration as deploy/base ships it (its ConfigMap)."""
    configmap = yaml.safe_load((ROOT / "deploy" / "base" / "configmap.yaml").read_text())
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def test_daemon_in_cluster_layout_with_the_deploy_service_account(
    tmp_path: Path, repo: Repo, cluster: Cluster, toolchain: Toolchain, kubeconfig: Path
) -> None:
    """A TokenRequest token of deploy/'s ServiceAccount, in the in-cluster file layout: two replicas sharded
    as deploy/ runs them (identities from POD_NAME) sync TAMS staging to Healthy (one syncs it, the other's
    status API reads its Environment object) and leave their shard group on SIGTERM (member Leases
    deleted); the same identity is refused pods, RBAC objects, nodes and other namespaces' leases."""
    applied = kubectl(toolchain, kubeconfig, "apply", "--server-side", "-k", str(ROOT / "deploy"))
    assert applied.returncode == 0, applied.stderr
    minted = kubectl(
        toolchain, kubeconfig, "create", "token", "reconciler", "-n", "reconciler-system", "--duration", "1h"
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(token)
    shutil.copy(cluster.pki_paths.ca_cert, account / "ca.crt")
    (account / "namespace").write_text("reconciler-system")
    state = cluster.load_state()
    assert state is not None

    shutil.copytree(ROOT / "environments", repo.work / "environments")
    repo.commit_and_push("environments")
    deployed = deployed_config()
    assert deployed["sharding"]["enabled"] is True, "deploy/ runs its replicas sharded"
    replicas = []
    for pod_name in PODS:
        replica = daemon_config(
            tmp_path,
            repo_url=repo.url,
            kubeconfig=kubeconfig,
            name=pod_name,
            environments=[
                {"name": "tams-staging", "path": "environments/tams/staging", "health_timeout": 120}
            ],
            leader_election=deployed["leader_election"],
            sharding={**deployed["sharding"], "group": "rbac-test"},
        )
        config = yaml.safe_load(replica.config_path.read_text())
        config["clusters"] = [{"name": "self", "in_cluster": True}]
        config["install_crds"] = False  # as in deploy/: the CRDs came with `kubectl apply -k deploy`
        replica.config_path.write_text(yaml.safe_dump(config))
        replica.extra_env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(state.ports["apiserver"]),
            "RECONCILER_SERVICEACCOUNT_DIR": str(account),
            "POD_NAME": pod_name,  # as deploy/ sets it from the downward API: the replica's identity
        }
        replicas.append(replica)
    syncing: DaemonProcess | None = None
    try:
        for replica in replicas:
            replica.start(toolchain)

        # one replica syncs it; the other tells its state from the Environment object it wrote
        def both_ready() -> list[dict[str, Any]] | None:
            found = [replica.environment("tams-staging") for replica in replicas]
            return found if all(view.get("condition") == "Ready" for view in found) else None

        views = wait_for(
            both_ready,
            timeout=120,
            what="TAMS staging to sync with the deploy/ identity, as both replicas tell it",
        )
        owner = views[0]["owner"]
        assert owner in PODS, views
        assert [view["owner"] for view in views] == [owner, owner], views
        assert [view["health"] for view in views] == ["Healthy", "Healthy"], views
        syncing = replicas[PODS.index(owner)]
        # its Environment object and Events were written with this identity too
        wait_for(
            lambda: syncing.metric("reconciler_events_total", reason="Synced", outcome="created") >= 1,
            what="the Synced Event to be recorded",
        )
        # and every request either made was accepted: no 403
        for replica in replicas:
            assert replica.metric("reconciler_kube_requests_total", code="403") == 0, replica.log()
            assert replica.metric("reconciler_events_total", outcome="failed") == 0, replica.log()
    finally:
        # the other first: stopping the owner first would hand the environment over to it
        for replica in sorted(replicas, key=lambda replica: replica is syncing):
            if replica.process is not None:
                assert replica.stop() == 0, replica.log()
    # both left the shard group on SIGTERM (member Leases deleted), the claim is released, nothing refused
    leases = ("get", "lease", "-n", "reconciler-system")
    for pod_name in PODS:
        member = kubectl(toolchain, kubeconfig, *leases, f"reconciler-member-{pod_name}")
        assert "NotFound" in member.stderr, member.stdout + member.stderr
    claim = kubectl(
        toolchain, kubeconfig, *leases, "reconciler-env-tams-staging", "-o", "jsonpath={.spec.holderIdentity}"
    )
    assert claim.returncode == 0, claim.stderr
    assert claim.stdout == "", claim.stdout
    for replica in replicas:
        assert "forbidden" not in replica.log_path.read_text(errors="replace").lower(), replica.log()

    identity = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub"]
    assert identity == "system:serviceaccount:reconciler-system:reconciler"
    server, ca = state.server, account / "ca.crt"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert request_as(server, ca, token, "POST", "/api/v1/namespaces/tams-staging/pods", pod) == 403
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "reconciler", "namespace": "reconciler-system"}],
    }
    assert (
        request_as(
            server, ca, token, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding
        )
        == 403
    )
    assert request_as(server, ca, token, "DELETE", "/api/v1/nodes/kwok-node-0") == 403
    assert (
        request_as(server, ca, token, "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases")
        == 403
    )
    # the Environment objects: written by server-side apply, read (listed) for the status API of the
    # environments other replicas sync, never deleted by it
    written = kubectl(toolchain, kubeconfig, "get", "environment", "tams-staging", "-n", "reconciler-system",
                      "-o", "jsonpath={.status.sync}/{.status.health}/{.status.owner}")  # fmt: skip
    assert written.stdout == f"Synced/Healthy/{owner}", written.stderr
    environments = "/apis/reconciler.dev/v1alpha1/namespaces/reconciler-system/environments"
    assert request_as(server, ca, token, "DELETE", f"{environments}/tams-staging") == 403
    assert request_as(server, ca, token, "GET", environments) == 200
    # positive control: the same token reads what it manages
    assert (
        request_as(server, ca, token, "GET", "/apis/apps/v1/namespaces/tams-staging/deployments/tams-api")
        == 200
    )
