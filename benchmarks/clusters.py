"""Benchmark (issue 13): push -> applied for an environment on cluster b while cluster a is healthy,
down, and slow, through one daemon that syncs both.

    .venv/bin/python -m benchmarks.clusters [--pushes 20] [--environments 3] [--delay 5] [--keep]

Two local clusters of its own ("bench-clusters-a" and "bench-clusters-b", b the daemon's home), a `git
daemon` serving a repository of ``--environments`` environments per cluster (each a few ConfigMaps and
a Service), a post-receive hook that sends a signed webhook, and the daemon as a subprocess. The daemon
reaches a's API server through the delaying TCP proxy of the tests (tests/tcpproxy.py), so a can be
made slow without touching it. Each measured push changes one ConfigMap of one environment on b:
"applied" is when that value is read back from b (polled every 10 ms over a kept-alive connection),
"Ready" when the daemon's status API shows the environment Ready at the pushed commit. Phases, in order:

* healthy: a answers normally;
* down: a's kube-apiserver killed (by its pid); how long until a's environments are Stalled
  (ClusterUnreachable); a change to a's environments pushed, then the pushes to b; a's API server
  started again, and how long until a's environments are Ready at the last commit without a push;
* slow: every chunk sent to a's API server held ``--delay`` s (the connections already open too); a
  change to a's environments pushed (a sync to a is then under way), then the pushes to b.

Prints p50/p95 per phase, the other local clusters running and the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler.devcluster import Cluster, ensure_toolchain, gitserver
from reconciler.devcluster.cluster import free_port, list_clusters
from reconciler.devcluster.probes import Http
from tests.tcpproxy import DelayProxy, proxied_kubeconfig, server_address

T = TypeVar("T")
NAMESPACE = "bench-clusters"


def git(*args: str, cwd: Path) -> str:
    return gitserver.git(*args, cwd=cwd, author="bench", timeout=120)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}")
        time.sleep(interval)


class Reader:
    """GETs of one cluster's API as its admin over one kept-alive connection (reconnects when it drops)."""

    def __init__(self, cluster: Cluster) -> None:
        host, port = server_address(cluster.kubeconfig_path)
        self.address = (host, port)
        self.context = ssl.create_default_context(cafile=str(cluster.pki_paths.ca_cert))
        self.context.load_cert_chain(str(cluster.pki_paths.admin_cert), str(cluster.pki_paths.admin_key))
        self.connection: http.client.HTTPSConnection | None = None

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None (absent, or no answer)."""
        for _ in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(*self.address, context=self.context, timeout=5)
            try:
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                continue
            if response.status != 200:
                return None
            data: dict[str, Any] = json.loads(body)
            return data
        return None

    def note(self, name: str) -> str | None:
        """The ``note`` of ConfigMap ``name`` in the benchmark's namespace."""
        obj = self.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
        return None if obj is None else str((obj.get("data") or {}).get("note"))


@dataclass
class Repository:
    """The environments repository: ``--environments`` environments on each cluster."""

    work: Path
    environments: dict[str, str]  # name -> cluster
    notes: dict[str, str] = field(default_factory=dict)

    def write(self) -> None:
        for env in self.environments:
            directory = self.work / env
            directory.mkdir(parents=True, exist_ok=True)
            objects: list[dict[str, Any]] = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"{env}-{part}", "namespace": NAMESPACE},
                    "data": {"note": self.notes.get(env, "0") if part == "settings" else part},
                }
                for part in ("settings", "two", "three")
            ]
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"{env}-svc", "namespace": NAMESPACE},
                    "spec": {"selector": {"app": env}, "ports": [{"port": 80, "targetPort": 8080}]},
                }
            )
            (directory / "objects.yaml").write_text(yaml.safe_dump_all(objects))
            (directory / "kustomization.yaml").write_text("resources: [objects.yaml]\n")

    def commit(self, message: str, **notes: str) -> str:
        """Set notes (by environment name), commit; the commit (not pushed)."""
        self.notes.update(notes)
        self.write()
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> str:
        """Push; what the post-receive hook said of its webhook ("... -> 202", or "-> unreachable")."""
        result = subprocess.run(
            ["git", "push", "origin", "main"],
            cwd=self.work,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        said = [line for line in result.stderr.splitlines() if "reconciler webhook" in line]
        return said[-1].removeprefix("remote:").strip() if said else "(the hook said nothing)"

    def on(self, cluster: str) -> list[str]:
        return [env for env, where in self.environments.items() if where == cluster]


class Daemon:
    """The daemon subprocess and its status API."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        with log_path.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=output,
            )

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def statuses(self) -> dict[str, dict[str, Any]]:
        _, body = self.get("/api/v1/environments")
        return {e["name"]: e for e in (body or {}).get("environments", [])}

    def ready_at(self, names: list[str], revision: str) -> bool:
        states = self.statuses()
        return all(
            (states.get(n) or {}).get("condition") == "Ready" and states[n].get("revision") == revision
            for n in names
        )

    def stalled(self, names: list[str]) -> bool:
        states = self.statuses()
        return all((states.get(n) or {}).get("reason") == "ClusterUnreachable" for n in names)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Phase:
    """The push latencies of one phase."""

    name: str
    applied: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        def figures(values: list[float]) -> str:
            return f"p50 {statistics.median(values) * 1000:6.0f} ms  p95 {percentile(values, 0.95) * 1000:6.0f} ms"

        return (
            f"{self.name:<14} push -> applied {figures(self.applied)}   push -> Ready {figures(self.ready)}"
        )


def measure(phase: Phase, pushes: int, repo: Repository, daemon: Daemon, reader_b: Reader, env: str) -> Phase:
    """``pushes`` pushes changing ``env`` (on b), one after the other."""
    for index in range(pushes):
        applied, ready = push_once(repo, daemon, reader_b, env, f"{phase.name}-{index}")
        phase.applied.append(applied)
        phase.ready.append(ready)
    log(phase.line())
    return phase


def push_once(repo: Repository, daemon: Daemon, reader_b: Reader, env: str, note: str) -> tuple[float, float]:
    """Push ``note`` to ``env``; s from ``git push`` to the note on b, and to ``env`` Ready at the commit."""
    sha = repo.commit(f"{env}: {note}", **{env: note})
    started = time.monotonic()
    hook = repo.push()
    if not hook.endswith("-> 202"):
        log(f"{note}: {hook} ({time.monotonic() - started:.1f} s after the push began)")
    until(lambda: reader_b.note(f"{env}-settings") == note, 60, f"{note} on b", interval=0.01)
    applied = time.monotonic() - started
    until(lambda: daemon.ready_at([env], sha), 60, f"{env} Ready at {sha[:12]}", interval=0.01)
    return applied, time.monotonic() - started


def run(args: argparse.Namespace) -> None:
    started_run = time.monotonic()
    tools = ensure_toolchain(log)
    names = {"a": "bench-clusters-a", "b": "bench-clusters-b"}
    others = [
        c.name for c in list_clusters() if c.name not in names.values() and c.status().state != "stopped"
    ]
    if others:
        log(f"other local clusters are running ({', '.join(others)}): they share these cores")
    clusters = {key: Cluster(name) for key, name in names.items()}
    try:
        for cluster in clusters.values():
            cluster.up(log, nodes=1, toolchain=tools)
            state = cluster.load_state()
            if state is None:
                raise RuntimeError(f"cluster {cluster.name!r} recorded no state")
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            Http(state.server, cluster.pki_paths).request("POST", "/api/v1/namespaces", namespace)
        with (
            tempfile.TemporaryDirectory(prefix="clusters-bench-") as tmp,
            DelayProxy(*server_address(clusters["a"].kubeconfig_path)) as proxy,
        ):
            phases = measure_all(args, Path(tmp), clusters, proxy, tools.kustomize)
        print(f"pushes per phase: {args.pushes}, environments per cluster: {args.environments}")
        for phase in phases:
            print(phase.line())
            for note in phase.notes:
                print(f"{'':<14} {note}")
            print(f"{'':<14} push -> applied, in order (s): {' '.join(f'{t:.2f}' for t in phase.applied)}")
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"load average at the end: {load}; {time.monotonic() - started_run:.0f} s in all")
        if others:
            print(f"other local clusters running at the start: {', '.join(others)}")
    finally:
        if not args.keep:
            for cluster in clusters.values():
                cluster.down(log)


def measure_all(
    args: argparse.Namespace, root: Path, clusters: dict[str, Cluster], proxy: DelayProxy, kustomize: Path
) -> list[Phase]:
    """Git server, repository, daemon; the three phases."""
    git("init", "-q", "--bare", "-b", "main", str(root / "envs.git"), cwd=root)
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    envs = {f"{c}-{i}": c for c in ("a", "b") for i in range(args.environments)}
    repo = Repository(work, envs)
    first = repo.commit("initial")
    git_port, daemon_port = free_port(), free_port()
    server = gitserver.serve(root, git_port)
    url = f"git://127.0.0.1:{git_port}/envs.git"
    git("remote", "add", "origin", url, cwd=work)
    repo.push()
    secret = root / "secret"
    secret.write_text(secrets.token_hex(20))
    gitserver.install_webhook_hook(root / "envs.git", f"http://127.0.0.1:{daemon_port}/webhooks/git", secret)
    kubeconfig_a = proxied_kubeconfig(clusters["a"].kubeconfig_path, root / "kubeconfig-a", proxy)
    cluster_settings = {"probe_interval": args.probe_interval}
    config = {
        "repository": {"url": url, "poll_interval": "1h"},
        "clusters": [
            {"name": "a", "kubeconfig": str(kubeconfig_a), **cluster_settings},
            {"name": "b", "kubeconfig": str(clusters["b"].kubeconfig_path), **cluster_settings},
        ],
        "environments": [
            {"name": env, "path": env, "cluster": cluster, "namespaces": [NAMESPACE]}
            for env, cluster in envs.items()
        ],
        # 60 signed deliveries a minute is the default limit (429 beyond): three phases push faster
        "webhooks": {"github": {"secret_file": str(secret)}, "rate_limit": 10000},
        "leader_election": {"enabled": False, "cluster": "b"},
        "inventory_namespace": "bench-clusters-system",
        "listen": f"127.0.0.1:{daemon_port}",
        "cache_dir": str(root / "cache"),
        "log_level": args.log_level,
        "kustomize": str(kustomize),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    daemon = Daemon(root / "config.yaml", daemon_port, root / "daemon.log")
    on_a, on_b = repo.on("a"), repo.on("b")
    measured = on_b[0]
    reader_b = Reader(clusters["b"])
    try:
        began = time.monotonic()
        until(lambda: daemon.ready_at(list(envs), first), 300, "every environment Ready", interval=0.2)
        log(
            f"{len(envs)} environments on two clusters Ready {time.monotonic() - began:.1f} s after the start"
        )

        healthy = measure(Phase("a healthy"), args.pushes, repo, daemon, reader_b, measured)

        down = Phase("a down")
        clusters["a"].stop("kube-apiserver", log)
        stopped = time.monotonic()
        until(lambda: daemon.stalled(on_a), 120, "a's environments Stalled (ClusterUnreachable)")
        down.notes.append(
            f"a's environments Stalled {time.monotonic() - stopped:.2f} s after its API server died"
        )
        repo.commit("a: while down", **dict.fromkeys(on_a, "while-down"))
        repo.push()
        measure(down, args.pushes, repo, daemon, reader_b, measured)
        head = git("rev-parse", "HEAD", cwd=work)
        starting = time.monotonic()
        clusters["a"].start("kube-apiserver", log)
        back = time.monotonic()
        until(lambda: daemon.ready_at(on_a, head), 300, "a's environments Ready again", interval=0.05)
        down.notes.append(
            f"a's environments Ready at the last commit {time.monotonic() - starting:.1f} s after a's API "
            f"server was started again (its /readyz said 200 after {back - starting:.1f} s), without a push"
        )

        slow = Phase(f"a {args.delay:g} s slow")
        proxy.delay = args.delay
        repo.commit("a: while slow", **dict.fromkeys(on_a, "while-slow"))
        pushed = time.monotonic()
        repo.push()
        measure(slow, args.pushes, repo, daemon, reader_b, measured)
        measured_for = time.monotonic() - pushed
        reader_a = Reader(clusters["a"])
        until(
            lambda: all(reader_a.note(f"{e}-settings") == "while-slow" for e in on_a), 600, "a's slow change"
        )
        slow.notes.append(
            f"a's change applied {time.monotonic() - pushed:.1f} s after its push (the pushes to b took "
            f"{measured_for:.1f} s)"
        )
        proxy.delay = 0.0
        return [healthy, down, slow]
    finally:
        proxy.delay = 0.0
        daemon.stop()
        if args.log_copy:
            args.log_copy.write_bytes(daemon.log_path.read_bytes())
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pushes", type=int, default=20, help="measured pushes per phase")
    parser.add_argument("--environments", type=int, default=3, help="environments per cluster")
    parser.add_argument("--delay", type=float, default=5.0, help="s the proxy holds each chunk to a")
    parser.add_argument("--probe-interval", default="1s", help="each cluster's probe_interval")
    parser.add_argument("--keep", action="store_true", help="leave the two clusters running")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--log-copy", type=Path, help="copy the daemon log here")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
