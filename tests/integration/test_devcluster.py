"""The dev-cluster lifecycle: several clusters at once, port clashes, the CLI, and a clean ``down``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devcluster import Cluster
from reconciler.devcluster import cluster as cluster_module
from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import _pid_runs

pytestmark = pytest.mark.cluster


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_second_cluster_survives_a_port_clash_and_down_stops_everything(
    cluster: Cluster, toolchain: Toolchain, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clash on the API server port is retried with new ports; both clusters run; down leaves nothing."""
    real_free_port = cluster_module.free_port
    calls: list[int] = []

    def clashing_free_port() -> int:
        calls.append(1)
        # The third port of the first attempt is the API server's: hand it one that is taken.
        return busy_port if len(calls) == 3 else real_free_port()

    monkeypatch.setattr(cluster_module, "free_port", clashing_free_port)
    messages: list[str] = []
    second = Cluster(f"second-{os.getpid()}")
    try:
        second.up(messages.append, nodes=1, toolchain=toolchain)
        assert any("retrying with new ports" in m for m in messages), messages
        status = second.status()
        assert status.state == "running"
        assert status.server != cluster.status().server
        assert cluster.status().state == "running"
        state = second.load_state()
        assert state is not None
        assert busy_port not in state.ports.values()
    finally:
        state = second.load_state()
        second.down(messages.append)
    assert state is not None
    for name, pid in state.pids.items():
        assert not _pid_runs(pid, state.executables[name]), f"{name} (pid {pid}) still runs after down"
    assert not second.directory.exists()
    assert cluster.status().state == "running"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "dev-cluster", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_up_prints_the_kubeconfig_last_and_reuses_a_running_cluster(toolchain: Toolchain) -> None:
    """`up` prints the kubeconfig path as its last line, a second `up` reuses, `down` removes."""
    name = f"cli-{os.getpid()}"
    try:
        first = _cli("up", "--name", name, "--nodes", "1")
        assert first.returncode == 0, first.stderr
        kubeconfig = Path(first.stdout.strip().splitlines()[-1])
        assert kubeconfig.is_file()
        nodes = subprocess.run(
            [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        items = json.loads(nodes.stdout)["items"]
        assert [n["metadata"]["name"] for n in items] == ["kwok-node-0"]

        again = _cli("up", "--name", name)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert again.stdout.strip().splitlines()[-1] == str(kubeconfig)

        assert _cli("kubeconfig", "--name", name).stdout.strip() == str(kubeconfig)
        listed = json.loads(_cli("status", "-o", "json").stdout)
        assert {"name": name, "state": "running"}.items() <= next(
            c for c in listed if c["name"] == name
        ).items()
    finally:
        down = _cli("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert _cli("kubeconfig", "--name", name).returncode == 1
