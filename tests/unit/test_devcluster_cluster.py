"""Cluster bookkeeping that needs no running processes: names, ports, status of absent clusters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.devcluster import Cluster, DevClusterError, list_clusters
from reconciler.devcluster.cluster import _pid_runs, free_port


@pytest.mark.parametrize("name", ["Default", "a_b", "-x", "x" * 41, ""])
def test_invalid_names_are_refused(name: str) -> None:
    """Names become directories and kubeconfig contexts, so only DNS labels are allowed."""
    with pytest.raises(DevClusterError, match="not a valid name"):
        Cluster(name)


def test_free_port_is_bindable() -> None:
    """free_port returns a loopback port that can be bound right away."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_stay_below_the_ephemeral_range() -> None:
    """A restarted server must not find its port taken by an outgoing connection meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(port < low for port in ports), sorted(ports)
    assert len(ports) > 1


def test_status_of_a_cluster_never_started_is_stopped(tmp_path: Path) -> None:
    """A name without a directory is reported stopped, and down says nothing was there."""
    cluster = Cluster("absent", root=tmp_path)
    assert cluster.status().state == "stopped"
    assert cluster.down(lambda _: None) is False
    assert list_clusters(tmp_path) == []


def test_pid_check_requires_the_recorded_executable() -> None:
    """A live pid running another program is not ours: down never kills a recycled pid."""
    executable = os.path.realpath(sys.executable)
    process = subprocess.Popen([executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _pid_runs(process.pid, executable)
        assert not _pid_runs(process.pid, "/usr/bin/not-this-one")
    finally:
        process.kill()
        process.wait()
    assert not _pid_runs(process.pid, executable)
