"""Issue 7's last criterion: the AI Plus web app of environments/ promoted from staging to production
end to end (new image tags in staging, two approvals, the commit, production Healthy), with the
cluster add-on CRDs it needs synced by the same daemon."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import Cluster
from reconciler.devcluster.provisioner import VolumeProvisioner
from tests.e2e.conftest import Admin, Repo, daemon_config, git
from tests.e2e.test_promotions import IDENTITIES, Setup
from tests.helpers import wait_for
from tests.support import ApproverKey

pytestmark = pytest.mark.cluster
ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
NAMESPACES = ("aiplus-staging", "aiplus-production")


def namespaces_gone(admin: Admin) -> bool:
    return all(admin.call("GET", f"/api/v1/namespaces/{n}")[0] == 404 for n in NAMESPACES)


@pytest.fixture
def aiplus_namespaces(admin: Admin) -> Iterator[None]:
    """The overlays' fixed namespaces: absent before the test (another test may still be deleting
    them), deleted after it."""
    wait_for(
        lambda: namespaces_gone(admin), timeout=120, interval=0.5, what="the aiplus namespaces to be gone"
    )
    yield
    for namespace in NAMESPACES:
        admin.call("DELETE", f"/api/v1/namespaces/{namespace}")
    wait_for(
        lambda: namespaces_gone(admin), timeout=120, interval=0.5, what="the aiplus namespaces to be deleted"
    )


def test_ai_plus_promotion_from_staging_to_production(
    tmp_path: Path,
    repo: Repo,
    cluster: Cluster,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    admin: Admin,
    aiplus_namespaces: None,
) -> None:
    """New image tags in staging → request → two approvals → one commit to the production overlay →
    production Synced and Healthy on those tags."""
    shutil.copytree(ENVIRONMENTS, repo.work / "environments")
    repo.commit_and_push("environments")
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    keys = {identity: ApproverKey.create(key_dir, identity) for identity in IDENTITIES}
    approvers = [{"identity": i, "keys": [k.public_line]} for i, k in keys.items()]
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            {"name": "cluster-addons", "path": "environments/cluster-addons/crds", "health_timeout": 60},
            {"name": "aiplus-staging", "path": "environments/aiplus/staging", "health_timeout": 90},
            {"name": "aiplus-production", "path": "environments/aiplus/production", "health_timeout": 90},
        ],
        inventory_namespace=namespace,
        # the aiplus overlays use ServiceMonitors, whose CRD the add-ons environment brings: until it
        # is Established their syncs fail and are retried at this interval
        resync_interval=5,
        promotions={
            "approvers": approvers,
            "pipelines": [
                {
                    "name": "aiplus",
                    "from": "aiplus-staging",
                    "to": "aiplus-production",
                    "approvals": 2,
                    "approvers": ["alice@example.com", "bob@example.com"],
                }
            ],
        },
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    provisioner = VolumeProvisioner(cluster)  # the db StatefulSets' claims
    provisioner.start()
    try:
        daemon.start(toolchain)
        setup = Setup(
            daemon, repo, "aiplus-staging", "aiplus-production", namespace, tmp_path, toolchain, keys
        )
        started = time.monotonic()
        for env in ("cluster-addons", "aiplus-staging", "aiplus-production"):
            setup.wait_ready(env)
        print(f"all three environments Ready in {time.monotonic() - started:.1f} s")

        overlay = repo.work / "environments/aiplus/staging/kustomization.yaml"
        overlay.write_text(overlay.read_text().replace("newTag: 1.13.0-rc.2", "newTag: 1.13.0"))
        revision = repo.commit_and_push("aiplus staging: 1.13.0")
        setup.wait_ready("aiplus-staging", revision)

        status, promotion = setup.request()
        assert status == 201, promotion
        assert sorted(i["newTag"] for i in promotion["images"]) == ["1.13.0", "1.13.0"]
        for approver in ("alice@example.com", "bob@example.com"):
            status, body = setup.decide(promotion, approver)
            assert status == 200, body
        done = setup.wait_phase(promotion["id"], "Succeeded", "Failed", timeout=120)
        assert done["phase"] == "Succeeded", done

        assert setup.commits_with(f"Promotion: {promotion['id']}") == [done["commit"]]  # fetches it too
        changed = git("show", "--format=", "--name-only", done["commit"], cwd=repo.work).split()
        assert changed == ["environments/aiplus/production/kustomization.yaml"]
        diff = git("show", "--format=", "-U0", done["commit"], cwd=repo.work)
        removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
        added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
        assert removed == ["-    newTag: 1.12.0", "-    newTag: 1.12.0"], diff
        assert added == ["+    newTag: 1.13.0", "+    newTag: 1.13.0"], diff
        for name, image in (("aiplus-api", "api"), ("aiplus-web", "web")):
            _, live = admin.call("GET", f"/apis/apps/v1/namespaces/aiplus-production/deployments/{name}")
            containers = live["spec"]["template"]["spec"]["containers"]
            assert containers[0]["image"] == f"ghcr.io/example/aiplus/{image}:1.13.0"
            assert live["status"].get("updatedReplicas") == live["spec"]["replicas"]
        production = daemon.environment("aiplus-production")
        assert (production["sync"], production["health"]) == ("Synced", "Healthy")
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()
        provisioner.stop()
