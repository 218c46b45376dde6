"""The README's main job: `make demo` (python -m reconciler.devcluster.demo) brings every environment
of environments/ to Ready and Healthy on a fresh local cluster of its own."""

from __future__ import annotations

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
    finally:
        Cluster(name).down(lambda _: None)
