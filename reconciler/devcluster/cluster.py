"""One local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok, started as loopback processes with a generated PKI.

A cluster lives in ``<cache>/clusters/<name>/``: its certificates, etcd data, process logs, kubeconfig
and ``state.json`` (ports, pids and the executable of each process). ``down`` stops exactly the
processes recorded there (checking that each pid still runs the executable we started, so a recycled
pid is never killed) and removes the directory. Several clusters run side by side on different ports.

kwok keeps fake Nodes Ready and drives the Pods bound to them through their lifecycle, so Deployments
become Available and Jobs complete without a container runtime.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.devcluster import pki, versions
from reconciler.devcluster.build import Toolchain, cache_root, ensure_toolchain
from reconciler.devcluster.errors import DevClusterError

Log = Callable[[str], None]

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
DEFAULT_NODES = 3
# Processes in start order; they are stopped in reverse.
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Writes only (reads, and the constant lease renewals and Events, are left out), at Metadata level: who
# (user agent), what (verb, objectRef) and the response code, never a body. A dry-run is logged too; its
# requestURI carries dryRun=All.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
      - group: ""
        resources: ["events"]
      - group: events.k8s.io
        resources: ["events"]
  - level: Metadata
"""
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_PORT_CLASH = re.compile(r"address already in use|bind: address", re.IGNORECASE)


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


@dataclass
class ClusterState:
    """What ``up`` recorded about a running cluster (persisted as state.json)."""

    name: str
    kubeconfig: str
    server: str
    kubernetes_version: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    executables: dict[str, str] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    started_at: float = 0.0


@dataclass(frozen=True)
class ProcessStatus:
    """Whether one recorded process still runs."""

    name: str
    pid: int
    alive: bool


@dataclass(frozen=True)
class ClusterStatus:
    """The health of one cluster directory, for ``dev-cluster status``."""

    name: str
    state: str  # running | degraded | stopped
    server: str
    kubeconfig: str
    processes: tuple[ProcessStatus, ...]


def _pid_runs(pid: int, executable: str) -> bool:
    """True when ``pid`` is a live (non-zombie) process running ``executable``.

    The executable is read from ``/proc/<pid>/exe`` (set by exec, unlike argv), so a recycled pid that
    runs another program is never taken for ours.
    """
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that exited
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and exe.removesuffix(" (deleted)") == executable


class _Http:
    """Tiny synchronous client for the readiness checks, authenticated as the admin."""

    def __init__(self, server: str, paths: pki.PkiPaths) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(paths.ca_cert))
        self.context.load_cert_chain(str(paths.admin_cert), str(paths.admin_key))

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the server is our own https loopback URL
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=timeout) as response:  # noqa: S310
                status: int = response.status
                return status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _node_manifest(name: str, zone: str) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/agent": "",
                "topology.kubernetes.io/zone": zone,
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"{versions.KWOK_VERSION}-kwok",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "kwok",
                "bootID": "",
                "kernelVersion": "",
                "machineID": "",
                "osImage": "",
                "systemUUID": "",
            },
        },
    }


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
        processes = tuple(
            ProcessStatus(name, pid, _pid_runs(pid, state.executables.get(name, "")))
            for name, pid in state.pids.items()
        )
        alive = [p.alive for p in processes]
        if alive and all(alive) and self._api_ready(state.server):
            verdict = "running"
        elif any(alive):
            verdict = "degraded"
        else:
            verdict = "stopped"
        return ClusterStatus(self.name, verdict, state.server, state.kubeconfig, processes)

    def _api_ready(self, server: str) -> bool:
        try:
            status, _ = _Http(server, self.pki_paths).request("GET", "/readyz", timeout=3)
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
            attempts = 3
            for attempt in range(1, attempts + 1):
                try:
                    return self._start(log, nodes, tools)
                except _PortClashError as clash:
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
        self._write_kubeconfig(server, paths)

        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            state,
            "etcd",
            tools.etcd,
            [
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(
            state,
            name="etcd",
            port=ports["etcd-client"],
            timeout=60,
            check=lambda: self._etcd_healthy(etcd_url),
        )

        issuer = "https://kubernetes.default.svc.cluster.local"
        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY, encoding="utf-8")
        self._spawn(
            state,
            "kube-apiserver",
            tools.kube_apiserver,
            [
                f"--etcd-servers={etcd_url}",
                f"--secure-port={ports['apiserver']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--tls-cert-file={paths.serving_cert}",
                f"--tls-private-key-file={paths.serving_key}",
                f"--client-ca-file={paths.ca_cert}",
                f"--service-account-issuer={issuer}",
                f"--service-account-key-file={paths.sa_pub}",
                f"--service-account-signing-key-file={paths.sa_key}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Pods get no token volume and need no default ServiceAccount to exist first: this avoids
                # the race between namespace creation and the ServiceAccount controller (as envtest does).
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log_path}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
            ],
        )
        http = _Http(server, paths)
        self._wait(
            state,
            name="kube-apiserver",
            port=ports["apiserver"],
            timeout=90,
            check=lambda: self._ok(http, "/readyz"),
        )

        kubeconfig = str(self.kubeconfig_path)
        self._spawn(
            state,
            "kube-controller-manager",
            tools.kube_controller_manager,
            [
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={paths.sa_key}",
                f"--root-ca-file={paths.ca_cert}",
                f"--cluster-signing-cert-file={paths.ca_cert}",
                f"--cluster-signing-key-file={paths.ca_key}",
                "--use-service-account-credentials=false",
                f"--cluster-name={self.name}",
                "--controllers=*,-nodeipam",
            ],
        )
        self._spawn(
            state,
            "kube-scheduler",
            tools.kube_scheduler,
            [
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._spawn(
            state,
            "kwok",
            tools.kwok,
            [
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--server-address=",
                f"--config={tools.kwok_stages}",
            ],
        )

        zones = ("zone-a", "zone-b", "zone-c")
        for index in range(nodes):
            node = _node_manifest(f"kwok-node-{index}", zones[index % len(zones)])
            status, body = http.request("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise DevClusterError(
                    step="register the fake nodes",
                    message=f"creating Node {node['metadata']['name']} returned {status}: {body[:300]!r}",
                )
        self._wait(
            state,
            name="kwok",
            port=None,
            timeout=60,
            check=lambda: self._nodes_ready(http, nodes),
            what="the fake nodes to become Ready",
        )
        self._wait(
            state,
            name="kube-controller-manager",
            port=None,
            timeout=60,
            check=lambda: self._ok(http, "/api/v1/namespaces/default/serviceaccounts/default"),
            what="the default ServiceAccount (the controller manager is working)",
        )
        log(f"cluster {self.name!r} is up at {server} in {time.monotonic() - started:.1f} s")
        return self.kubeconfig_path

    def _write_kubeconfig(self, server: str, paths: pki.PkiPaths) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        context = f"reconciler-{self.name}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {"server": server, "certificate-authority-data": b64(paths.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": f"{context}-admin",
                    "user": {
                        "client-certificate-data": b64(paths.admin_cert),
                        "client-key-data": b64(paths.admin_key),
                    },
                }
            ],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-admin"}}],
            "current-context": context,
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.kubeconfig_path.chmod(0o600)

    def _spawn(self, state: ClusterState, name: str, executable: Path, args: list[str]) -> None:
        if not executable.is_file():
            raise DevClusterError(
                step=f"start {name}",
                message=f"{executable} does not exist; rebuild with `reconciler dev-cluster up`",
            )
        log_file = self.logs / f"{name}.log"
        with log_file.open("ab") as handle:
            process = subprocess.Popen(
                [str(executable), *args],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
        state.pids[name] = process.pid
        state.executables[name] = os.path.realpath(executable)
        state.commands[name] = [str(executable), *args]
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
        deadline = time.monotonic() + timeout
        log_file = self.logs / f"{name}.log"
        delay = 0.05
        while True:
            if check():
                return
            if not _pid_runs(state.pids[name], state.executables[name]):
                text = log_file.read_text(errors="replace") if log_file.exists() else ""
                if port is not None and _PORT_CLASH.search(text):
                    raise _PortClashError(f"start {name}", port)
                raise DevClusterError(
                    step=f"start {name}", message="the process exited during start-up", log_file=log_file
                )
            if time.monotonic() > deadline:
                raise DevClusterError(
                    step=f"start {name}",
                    message=f"timed out after {timeout:.0f} s waiting for {what or name + ' to be ready'}",
                    log_file=log_file,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    @staticmethod
    def _ok(http: _Http, path: str) -> bool:
        try:
            status, _ = http.request("GET", path, timeout=3)
        except (OSError, ssl.SSLError):
            return False
        return status == 200

    @staticmethod
    def _nodes_ready(http: _Http, count: int) -> bool:
        try:
            status, body = http.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok", timeout=3)
        except (OSError, ssl.SSLError):
            return False
        if status != 200:
            return False
        ready = 0
        for node in json.loads(body).get("items", []):
            for condition in node.get("status", {}).get("conditions") or []:
                if condition.get("type") == "Ready" and condition.get("status") == "True":
                    ready += 1
        return ready >= count

    # -- restart (for failure tests) -------------------------------------------------------------
    def restart(self, name: str, log: Log = print, timeout: float = 90.0, *, crash: bool = True) -> None:
        """Stop one component and start it again with the same arguments; wait until it is ready.

        ``crash`` (the default) kills it with SIGKILL, as a crash would; otherwise it gets SIGTERM and
        its graceful shutdown (up to a minute for kube-apiserver while watches are open).
        """
        with self._lock():
            state = self.load_state()
            if state is None or name not in state.commands:
                raise DevClusterError(
                    step=f"restart {name}", message="the cluster or component is not running"
                )
            pid, executable = state.pids[name], state.executables[name]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL if crash else signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_runs(pid, executable) and time.monotonic() < deadline:
                time.sleep(0.05)
            command = state.commands[name]
            self._spawn(state, name, Path(command[0]), command[1:])
            if name == "kube-apiserver":
                http = _Http(state.server, self.pki_paths)
                port = state.ports["apiserver"]
                self._wait(
                    state, name=name, port=port, timeout=timeout, check=lambda: self._ok(http, "/readyz")
                )
            log(f"{name} of cluster {self.name!r} restarted")

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
            executable = state.executables.get(name, "")
            if pid is None or not _pid_runs(pid, executable):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _pid_runs(pid, executable) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_runs(pid, executable):
                log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _pid_runs(pid, executable):
                    time.sleep(0.05)


class _PortClashError(Exception):
    def __init__(self, step: str, port: int) -> None:
        super().__init__(f"{step}: port {port} already in use")
        self.step = step
        self.port = port


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
