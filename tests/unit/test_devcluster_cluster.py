"""Cluster bookkeeping that needs no control plane: names, ports, status of absent clusters, and stopping
and starting one component (on stand-in processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from reconciler.devcluster import Cluster, DevClusterError, list_clusters, processes
from reconciler.devcluster.cluster import ClusterState, _pid_runs, free_port
from tests.helpers import wait_for


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


# -- stop and start one component (what the failure tests use), on stand-in processes -------------


def _script_cluster(root: Path, scripts: dict[str, str]) -> Cluster:
    """A cluster directory whose recorded components are Python scripts (no real control plane): each
    ``scripts`` entry is spawned and recorded as ``up`` records a real component."""
    cluster = Cluster("stand-in", root=root)
    cluster.logs.mkdir(parents=True)
    state = ClusterState(
        name=cluster.name, kubeconfig="", server="https://127.0.0.1:1", kubernetes_version="", ports={}
    )
    for name, script in scripts.items():
        processes.spawn(cluster.directory, cluster.logs, state, name, Path(sys.executable), ["-c", script])
    cluster.state_file.write_text(json.dumps(asdict(state)), encoding="utf-8")
    return cluster


def _recorded(cluster: Cluster, name: str) -> tuple[int, str]:
    state = cluster.load_state()
    assert state is not None
    return state.pids[name], state.executables[name]


def _logged(cluster: Cluster, name: str, text: str) -> bool:
    path = cluster.logs / f"{name}.log"
    return path.exists() and text in path.read_text()


SLEEPER = "import time; print('up', flush=True); time.sleep(120)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(120)"
)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Cluster]:
    """Two stand-in components, "kwok" and "kube-scheduler"; everything recorded is stopped afterwards."""
    cluster = _script_cluster(tmp_path, {"kwok": SLEEPER, "kube-scheduler": SLEEPER})
    try:
        yield cluster
    finally:
        cluster.down(lambda _: None)


def test_stop_kills_one_component_by_its_recorded_pid_and_waits_until_it_is_gone(stand_in: Cluster) -> None:
    """stop returns only once the process is gone; the other components keep running."""
    pid, executable = _recorded(stand_in, "kwok")
    other = _recorded(stand_in, "kube-scheduler")
    assert _pid_runs(pid, executable)
    stand_in.stop("kwok", lambda _: None)
    assert not _pid_runs(pid, executable)
    assert _pid_runs(*other)
    assert stand_in.status().state == "degraded"


def test_start_respawns_the_recorded_command_and_is_a_no_op_while_it_runs(stand_in: Cluster) -> None:
    """start runs the same command again under a new (recorded) pid; starting a running one does not
    start a second copy."""
    before = stand_in.load_state()
    assert before is not None
    stand_in.stop("kwok", lambda _: None)
    stand_in.start("kwok", lambda _: None)
    after = stand_in.load_state()
    assert after is not None
    assert after.pids["kwok"] != before.pids["kwok"]
    assert after.commands["kwok"] == before.commands["kwok"]
    assert _pid_runs(after.pids["kwok"], after.executables["kwok"])
    stand_in.start("kwok", lambda _: None)
    again = stand_in.load_state()
    assert again is not None
    assert again.pids["kwok"] == after.pids["kwok"]


def test_restart_is_stop_then_start(stand_in: Cluster) -> None:
    """restart leaves the component running under a new pid, the old one gone."""
    old = _recorded(stand_in, "kube-scheduler")
    stand_in.restart("kube-scheduler", lambda _: None)
    new = _recorded(stand_in, "kube-scheduler")
    assert new[0] != old[0]
    assert not _pid_runs(*old)
    assert _pid_runs(*new)


def test_a_graceful_stop_kills_what_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    """crash=False sends SIGTERM first; a process that ignores it is killed once ``timeout`` has passed."""
    cluster = _script_cluster(tmp_path, {"kwok": STUBBORN})
    try:
        wait_for(lambda: _logged(cluster, "kwok", "up"), timeout=30, what="the SIGTERM handler")
        pid, executable = _recorded(cluster, "kwok")
        started = time.monotonic()
        cluster.stop("kwok", lambda _: None, timeout=0.5, crash=False)
        assert time.monotonic() - started >= 0.5
        assert not _pid_runs(pid, executable)
    finally:
        cluster.down(lambda _: None)


def test_stop_never_signals_a_pid_that_runs_another_program(tmp_path: Path) -> None:
    """The recorded pid now runs something else (a recycled pid): stop leaves it alone."""
    cluster = _script_cluster(tmp_path, {})
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = cluster.load_state()
        assert state is not None
        state.pids["kwok"] = stranger.pid
        state.executables["kwok"] = os.path.realpath(sys.executable)
        state.commands["kwok"] = [sys.executable, "-c", SLEEPER]
        cluster.state_file.write_text(json.dumps(asdict(state)), encoding="utf-8")
        cluster.stop("kwok", lambda _: None)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_and_start_of_an_unknown_component_fail(stand_in: Cluster, tmp_path: Path) -> None:
    """Only a component the cluster recorded can be stopped or started."""
    with pytest.raises(DevClusterError, match="not running"):
        stand_in.stop("kube-apiserver", lambda _: None)
    with pytest.raises(DevClusterError, match="not running"):
        Cluster("never-started", root=tmp_path).start("etcd", lambda _: None)
