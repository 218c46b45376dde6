"""One local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok, started as loopback processes with a generated PKI.

A cluster lives in ``<cache>/clusters/<name>/``: its certificates, etcd data, process logs, kubeconfig
and ``state.json`` (ports, pids and the executable of each process). ``down`` stops exactly the
processes recorded there (checking that each pid still runs the executable we started, so a recycled
pid is never killed) and removes the directory. Several clusters run side by side on different ports.

kwok keeps fake Nodes Ready and drives the Pods bound to them through their lifecycle, so Deployments
become Available and Jobs complete without a container runtime.

This module owns the cluster's life cycle (up, status, stop/start/restart of one component, down);
``components`` holds the command lines, ``processes`` spawning, waiting and stopping, ``probes`` the
readiness checks, ``nodes`` the fake nodes, ``kubeconfig`` the admin kubeconfig and ``state`` what is
recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from reconciler.devcluster import components, pki, processes, versions
from reconciler.devcluster.build import Toolchain, cache_root, ensure_toolchain
from reconciler.devcluster.components import AUDIT_POLICY, SERVICE_CIDR
from reconciler.devcluster.errors import DevClusterError
from reconciler.devcluster.kubeconfig import write_kubeconfig
from reconciler.devcluster.nodes import node_manifest, register_nodes
from reconciler.devcluster.probes import Http, etcd_healthy, nodes_ready, ok
from reconciler.devcluster.processes import Log, PortClashError
from reconciler.devcluster.processes import pid_runs as _pid_runs
from reconciler.devcluster.state import ClusterState, ClusterStatus, ProcessStatus

__all__ = [
    "AUDIT_POLICY",
    "DEFAULT_NODES",
    "PROCESSES",
    "SERVICE_CIDR",
    "SERVICE_IP",
    "Cluster",
    "ClusterState",
    "ClusterStatus",
    "Log",
    "ProcessStatus",
    "_Http",
    "_node_manifest",
    "_pid_runs",
    "free_port",
    "list_clusters",
    "validate_name",
]

_Http = Http  # the name the volume provisioner and older callers import
_node_manifest = node_manifest

SERVICE_IP = "10.96.0.1"
DEFAULT_NODES = 3
# Processes in start order; they are stopped in reverse.
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range.

    Ports the kernel hands to outgoing connections are avoided: a server that restarts on its port
    (the API server in the crash tests) must not find it taken by some client's connection meanwhile.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(20000, low)) if low > 21000 else []
    for _ in range(200):
        port = random.choice(candidates) if candidates else 0  # noqa: S311 - not a secret
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise DevClusterError(step="pick a free port", message="no free port found below the ephemeral range")


def validate_name(name: str) -> str:
    """Cluster names become directory and context names: lower-case DNS labels only."""
    if not _NAME.fullmatch(name):
        raise DevClusterError(
            step="check the cluster name",
            message=f"{name!r} is not a valid name: use 1-40 lower-case letters, digits and '-'",
        )
    return name


class Cluster:
    """A named local control plane; see the module docstring."""

    def __init__(self, name: str = "default", root: Path | None = None) -> None:
        self.name = validate_name(name)
        self.root = root or cache_root()
        self.directory = self.root / "clusters" / self.name
        self.state_file = self.directory / "state.json"
        self.kubeconfig_path = self.directory / "kubeconfig"
        self.logs = self.directory / "logs"
        self.pki_paths = pki.PkiPaths.under(self.directory / "pki")
        # The API server's own record of every write (see AUDIT_POLICY): tests count writes per
        # namespace and client from it, which apiserver_request_total cannot tell apart.
        self.audit_log_path = self.logs / "audit.log"

    # -- state ---------------------------------------------------------------------------------
    def load_state(self) -> ClusterState | None:
        """The recorded state, or None when the cluster was never started (or was removed)."""
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            return ClusterState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _save_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        lock_dir = self.root / "clusters"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with (lock_dir / f".{self.name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> ClusterStatus:
        """Which recorded processes are alive and whether the API server answers."""
        state = self.load_state()
        if state is None:
            return ClusterStatus(self.name, "stopped", "", "", ())
        recorded = tuple(
            ProcessStatus(name, pid, _pid_runs(pid, state.executables.get(name, "")))
            for name, pid in state.pids.items()
        )
        alive = [p.alive for p in recorded]
        if alive and all(alive) and self._api_ready(state.server):
            verdict = "running"
        elif any(alive):
            verdict = "degraded"
        else:
            verdict = "stopped"
        return ClusterStatus(self.name, verdict, state.server, state.kubeconfig, recorded)

    def _api_ready(self, server: str) -> bool:
        try:
            status, _ = Http(server, self.pki_paths).request("GET", "/readyz", timeout=3)
        except (OSError, ssl.SSLError):
            return False
        return status == 200

    # -- up ------------------------------------------------------------------------------------
    def up(self, log: Log = print, nodes: int = DEFAULT_NODES, toolchain: Toolchain | None = None) -> Path:
        """Start the cluster, or reuse it when it already runs; return its kubeconfig path."""
        tools = toolchain or ensure_toolchain(log, self.root)
        with self._lock():
            current = self.status()
            if current.state == "running":
                log(f"cluster {self.name!r} is already running at {current.server}")
                return self.kubeconfig_path
            if current.state == "degraded":
                log(f"cluster {self.name!r} is degraded; restarting it")
            self._stop_recorded(log)
            shutil.rmtree(self.directory, ignore_errors=True)
            return self._start_with_retries(log, nodes, tools)

    def _start_with_retries(self, log: Log, nodes: int, tools: Toolchain, attempts: int = 3) -> Path:
        """Start from scratch; a port another program took meanwhile means new ports and another try."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(log, nodes, tools)
            except PortClashError as clash:
                self._stop_recorded(log)
                shutil.rmtree(self.directory, ignore_errors=True)
                if attempt == attempts:
                    raise DevClusterError(
                        step=clash.step,
                        message=(
                            f"port {clash.port} was taken by another program {attempts} times in a "
                            "row; free some loopback ports and run `reconciler dev-cluster up` again"
                        ),
                        log_file=None,
                    ) from clash
                log(f"port {clash.port} was taken while starting {clash.step}; retrying with new ports")
            except BaseException:
                # Leave nothing running behind a failed start; keep the logs for the message.
                self._stop_recorded(log)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self, log: Log, nodes: int, tools: Toolchain) -> Path:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        paths = pki.generate(self.directory / "pki", self.name, SERVICE_IP)
        ports = {name: free_port() for name in ("etcd-client", "etcd-peer", "apiserver")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        state = ClusterState(
            name=self.name,
            kubeconfig=str(self.kubeconfig_path),
            server=server,
            kubernetes_version=versions.KUBERNETES_VERSION,
            ports=ports,
            started_at=time.time(),
        )
        self._save_state(state)
        write_kubeconfig(self.kubeconfig_path, self.name, server, paths)
        etcd_url = self._start_etcd(state, tools)
        http = self._start_apiserver(state, tools, paths, etcd_url)
        self._start_controllers(state, tools, paths)
        register_nodes(http, nodes)
        self._wait(
            state,
            name="kwok",
            port=None,
            timeout=60,
            check=lambda: nodes_ready(http, nodes),
            what="the fake nodes to become Ready",
        )
        self._wait(
            state,
            name="kube-controller-manager",
            port=None,
            timeout=60,
            check=lambda: ok(http, "/api/v1/namespaces/default/serviceaccounts/default"),
            what="the default ServiceAccount (the controller manager is working)",
        )
        log(f"cluster {self.name!r} is up at {server} in {time.monotonic() - started:.1f} s")
        return self.kubeconfig_path

    def _start_etcd(self, state: ClusterState, tools: Toolchain) -> str:
        """Start etcd and wait until it is healthy; its client URL."""
        etcd_url = f"http://127.0.0.1:{state.ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        self._spawn(
            state, "etcd", tools.etcd, components.etcd_args(self.directory / "etcd", etcd_url, peer_url)
        )
        self._wait(
            state,
            name="etcd",
            port=state.ports["etcd-client"],
            timeout=60,
            check=lambda: etcd_healthy(etcd_url),
        )
        return etcd_url

    def _start_apiserver(
        self, state: ClusterState, tools: Toolchain, paths: pki.PkiPaths, etcd_url: str
    ) -> Http:
        """Start kube-apiserver and wait until it is ready; a client of it, as the admin."""
        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY, encoding="utf-8")
        args = components.apiserver_args(
            self.directory, state.ports["apiserver"], etcd_url, paths, audit_policy, self.audit_log_path
        )
        self._spawn(state, "kube-apiserver", tools.kube_apiserver, args)
        http = Http(state.server, paths)
        self._wait(
            state,
            name="kube-apiserver",
            port=state.ports["apiserver"],
            timeout=90,
            check=lambda: ok(http, "/readyz"),
        )
        return http

    def _start_controllers(self, state: ClusterState, tools: Toolchain, paths: pki.PkiPaths) -> None:
        """Start kube-controller-manager, kube-scheduler and kwok (waited for by what they do)."""
        kubeconfig = str(self.kubeconfig_path)
        self._spawn(
            state,
            "kube-controller-manager",
            tools.kube_controller_manager,
            components.controller_manager_args(kubeconfig, paths, self.name),
        )
        self._spawn(state, "kube-scheduler", tools.kube_scheduler, components.scheduler_args(kubeconfig))
        self._spawn(state, "kwok", tools.kwok, components.kwok_args(kubeconfig, tools.kwok_stages))

    def _spawn(self, state: ClusterState, name: str, executable: Path, args: list[str]) -> None:
        processes.spawn(self.directory, self.logs, state, name, executable, args)
        self._save_state(state)

    def _wait(
        self,
        state: ClusterState,
        *,
        name: str,
        port: int | None,
        timeout: float,
        check: Callable[[], bool],
        what: str | None = None,
    ) -> None:
        processes.wait_ready(
            state, self.logs / f"{name}.log", name=name, port=port, timeout=timeout, check=check, what=what
        )

    # -- stop, start, restart (for failure tests) ------------------------------------------------
    def stop(self, name: str, log: Log = print, timeout: float = 90.0, *, crash: bool = True) -> None:
        """Stop one component by its recorded pid and return once it is gone; the rest keeps running.

        ``crash`` (the default) kills it with SIGKILL, as a crash would; otherwise it gets SIGTERM and
        its graceful shutdown (up to a minute for kube-apiserver while watches are open), and SIGKILL
        if it is still there after ``timeout`` s. A component that is not running is left alone (its
        recorded pid is never signalled: it may belong to another program by now).
        """
        with self._lock():
            state = self._recorded(name, "stop")
            self._stop_component(state, name, timeout, crash=crash)
        log(f"{name} of cluster {self.name!r} stopped")

    def start(self, name: str, log: Log = print, timeout: float = 90.0) -> None:
        """Start one stopped component again with its recorded command and wait until it is ready
        (kube-apiserver: ``/readyz``; etcd: healthy; the others are not waited for, as in ``up``).

        A component that still runs is not started twice; it is only waited for.
        """
        with self._lock():
            state = self._recorded(name, "start")
            spawned = self._start_component(state, name, timeout)
        log(f"{name} of cluster {self.name!r} {'started' if spawned else 'is running'}")

    def restart(self, name: str, log: Log = print, timeout: float = 90.0, *, crash: bool = True) -> None:
        """Stop one component and start it again with the same arguments; wait until it is ready.

        ``crash`` (the default) kills it with SIGKILL, as a crash would; otherwise it gets SIGTERM and
        its graceful shutdown (see ``stop``).
        """
        with self._lock():
            state = self._recorded(name, "restart")
            self._stop_component(state, name, timeout, crash=crash)
            self._start_component(state, name, timeout)
        log(f"{name} of cluster {self.name!r} restarted")

    def _recorded(self, name: str, action: str) -> ClusterState:
        """The recorded state, which must know how ``name`` was started."""
        state = self.load_state()
        if state is None or name not in state.commands:
            raise DevClusterError(step=f"{action} {name}", message="the cluster or component is not running")
        return state

    @staticmethod
    def _stop_component(state: ClusterState, name: str, timeout: float, *, crash: bool) -> None:
        """Signal ``name`` (if it still runs our executable) and wait until it is gone."""
        pid, executable = state.pids[name], state.executables[name]
        if not _pid_runs(pid, executable):
            return
        processes.signal_and_wait(pid, executable, signal.SIGKILL if crash else signal.SIGTERM, timeout)
        if not crash and _pid_runs(pid, executable):
            processes.signal_and_wait(pid, executable, signal.SIGKILL, timeout)
        if _pid_runs(pid, executable):
            raise DevClusterError(
                step=f"stop {name}", message=f"pid {pid} is still running {timeout:.0f} s after SIGKILL"
            )

    def _start_component(self, state: ClusterState, name: str, timeout: float, attempts: int = 5) -> bool:
        """Spawn ``name`` unless it runs, then wait until it is ready; whether it was spawned. A port
        of its own found taken (a restart must keep its port: clients know it) is tried again a
        second later, a few times: another process may hold it briefly."""
        for attempt in range(attempts):
            try:
                return self._start_once(state, name, timeout)
            except PortClashError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)  # dev-cluster tooling, not the daemon: a plain wait between attempts
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, state: ClusterState, name: str, timeout: float) -> bool:
        spawned = not _pid_runs(state.pids[name], state.executables[name])
        if spawned:
            command = state.commands[name]
            self._spawn(state, name, Path(command[0]), command[1:])
        if name == "kube-apiserver":
            http = Http(state.server, self.pki_paths)
            port = state.ports["apiserver"]
            self._wait(state, name=name, port=port, timeout=timeout, check=lambda: ok(http, "/readyz"))
        elif name == "etcd":
            url = f"http://127.0.0.1:{state.ports['etcd-client']}"
            port = state.ports["etcd-client"]
            self._wait(state, name=name, port=port, timeout=timeout, check=lambda: etcd_healthy(url))
        return spawned

    # -- down ----------------------------------------------------------------------------------
    def down(self, log: Log = print) -> bool:
        """Stop every recorded process and remove the cluster directory; False if nothing was there."""
        with self._lock():
            existed = self.directory.exists()
            self._stop_recorded(log)
            shutil.rmtree(self.directory, ignore_errors=True)
        if existed:
            log(f"cluster {self.name!r} stopped and removed")
        return existed

    def _stop_recorded(self, log: Log, grace: float = 3.0) -> None:
        """SIGTERM every recorded process (newest first), SIGKILL what is still there after ``grace`` s.

        The cluster is thrown away, so a short grace is enough: kube-apiserver's graceful shutdown can
        otherwise take a minute while clients hold watches.
        """
        state = self.load_state()
        if state is None:
            return
        for name in reversed(PROCESSES):
            pid = state.pids.get(name)
            if pid is not None:
                processes.stop(name, pid, state.executables.get(name, ""), log, grace)


def list_clusters(root: Path | None = None) -> list[Cluster]:
    """Every cluster that has a directory under the cache."""
    base = (root or cache_root()) / "clusters"
    if not base.is_dir():
        return []
    return [
        Cluster(entry.name, root)
        for entry in sorted(base.iterdir())
        if entry.is_dir() and _NAME.fullmatch(entry.name)
    ]
