"""A tenant environment through the daemon: synced as its own ServiceAccount, and a hostile commit to its
overlay refused whole (status, Event, metric), with zero writes and nothing pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.kube import KubeClient
from tests.e2e.conftest import Admin, Repo, daemon_config
from tests.helpers import eventually, wait_for
from tests.support import AuditLog, config_map, create_deployer

pytestmark = pytest.mark.cluster


def events_about(admin: Admin, environment: str) -> list[dict[str, Any]]:
    status, body = admin.call("GET", "/api/v1/namespaces/reconciler-system/events")
    assert status == 200
    return [e for e in body.get("items", []) if e.get("involvedObject", {}).get("name") == environment]


async def test_a_hostile_tenant_commit_is_refused_by_the_daemon_with_zero_writes(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube: KubeClient,
    audit: AuditLog,
    admin: Admin,
) -> None:
    """The tenant syncs as its ServiceAccount; a commit adding a ClusterRoleBinding to cluster-admin, a
    ConfigMap in another namespace and a Secret in the daemon's namespace (and dropping one of its
    objects) ends Stalled with PolicyViolation, an Event and the metric, and writes and prunes nothing."""
    await create_deployer(kube, namespace)
    name = f"{namespace[:40]}-t"
    repo.write("tenant/kustomization.yaml", "resources: [objects.yaml]\n")
    repo.write("tenant/objects.yaml", [config_map("kept", namespace), config_map("dropped", namespace)])
    repo.commit_and_push("tenant")
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            {
                "name": name,
                "path": "tenant",
                "namespaces": [namespace],
                "cluster_scoped": [],
                "service_account": f"{namespace}/deployer",
                "health_timeout": 60,
            }
        ],
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    daemon.start(toolchain)
    try:
        wait_for(
            lambda: daemon.environment(name).get("condition") == "Ready",
            timeout=90,
            what="the tenant to sync as its ServiceAccount",
        )
        assert daemon.metric("reconciler_kube_requests_total", code="403") == 0, daemon.log()

        repo.write(
            "tenant/objects.yaml",
            [
                config_map("kept", namespace),
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"{name}-takeover"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}],
                },
                config_map(f"{name}-planted", "default"),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "reconciler-webhooks", "namespace": "reconciler-system"},
                    "stringData": {"github": "attacker-chosen-secret-value-0123456789"},
                },
            ],
        )
        since = audit.mark()
        repo.commit_and_push("hostile")
        status = wait_for(
            lambda: (s := daemon.environment(name)).get("reason") == "PolicyViolation" and s,
            timeout=60,
            what="the hostile revision to be refused",
        )
        assert status["condition"] == "Stalled"
        assert f"ClusterRoleBinding/{name}-takeover" in status["message"]
        assert "Secret/reconciler-system/reconciler-webhooks" in status["message"]
        assert "attacker-chosen-secret-value" not in daemon.log()
        assert daemon.metric("reconciler_policy_violations_total", environment=name, rule="reserved") == 1
        assert daemon.metric("reconciler_policy_violations_total", environment=name, rule="namespace") == 1
        wait_for(
            lambda: any(e.get("reason") == "PolicyViolation" for e in events_about(admin, name)),
            what="a PolicyViolation Event",
        )
        writes = await audit.writes(kube, since, resources={"configmaps", "secrets", "clusterrolebindings"})
        assert writes == {}, writes
        dropped = await eventually(
            lambda: kube.get("v1", "ConfigMap", namespace, "dropped"), what="the dropped object"
        )
        assert dropped is not None
    finally:
        assert daemon.stop() == 0
