"""The README's main job: `make demo` (python -m reconciler.devcluster.demo) brings every environment
of environments/ to Ready and Healthy on a fresh local cluster of its own."""

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
        # the tenants were written as their own ServiceAccounts, the others as the daemon itself
        writers: dict[str, set[str]] = {}
        for line in Cluster(name).audit_log_path.read_text().splitlines():
            event = json.loads(line)
            namespace = (event.get("objectRef") or {}).get("namespace", "")
            if event.get("verb") == "patch" and str(event.get("userAgent", "")).startswith("reconciler/"):
                as_user = (event.get("impersonatedUser") or {}).get("username", "")
                writers.setdefault(namespace, set()).add(as_user or event["user"]["username"])
        for tenant in ("access-staging", "aiplus-production"):
            assert writers[tenant] == {f"system:serviceaccount:{tenant}:reconciler-deployer"}, writers
        assert writers["tams-staging"] == {"reconciler-dev-admin"}, writers
    finally:
        Cluster(name).down(lambda _: None)
