"""The README's main job: `make demo` (python -m reconciler.devcluster.demo) brings every environment
of environments/ to Ready and Healthy on two fresh local clusters of its own: staging overlays on the
staging cluster, the others on production."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import Cluster

pytestmark = pytest.mark.cluster


def test_the_demo_syncs_every_environment_to_healthy(toolchain: Toolchain) -> None:
    name = f"pytest-demo-{os.getpid()}"
    clusters = {"production": name, "staging": f"{name}-staging"}
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler.devcluster.demo",
                "--once",
                "--timeout",
                "240",
                "--name",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        assert "environments are Ready and Healthy" in result.stdout
        for env in ("tams-staging", "tams-production"):
            assert env in result.stdout
        # the tenants were written as their own ServiceAccounts, the others as the daemon itself; each
        # overlay's objects were written to its own cluster only
        writers = {cluster: _writers(Cluster(name)) for cluster, name in clusters.items()}
        assert writers["staging"]["access-staging"] == {
            "system:serviceaccount:access-staging:reconciler-deployer"
        }, writers
        assert writers["production"]["aiplus-production"] == {
            "system:serviceaccount:aiplus-production:reconciler-deployer"
        }, writers
        assert writers["staging"]["tams-staging"] == {"reconciler-dev-admin"}, writers
        assert "tams-production" in writers["production"]
        assert not any(ns.endswith("-production") for ns in writers["staging"]), writers["staging"]
        assert not any(ns.endswith("-staging") for ns in writers["production"]), writers["production"]
    finally:
        for cluster in clusters.values():
            Cluster(cluster).down(lambda _: None)


def _writers(cluster: Cluster) -> dict[str, set[str]]:
    """Who reconciler patched objects as, by namespace, from ``cluster``'s audit log."""
    writers: dict[str, set[str]] = {}
    for line in cluster.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        namespace = (event.get("objectRef") or {}).get("namespace", "")
        if event.get("verb") == "patch" and str(event.get("userAgent", "")).startswith("reconciler/"):
            as_user = (event.get("impersonatedUser") or {}).get("username", "")
            writers.setdefault(namespace, set()).add(as_user or event["user"]["username"])
    return writers
