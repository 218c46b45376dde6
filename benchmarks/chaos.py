"""Chaos benchmark: rounds of random faults against the real daemon, and what must hold after each.

    .venv/bin/python -m benchmarks.chaos [--rounds 100] [--seed 16] [--max-faults 3] [--keep]
    .venv/bin/python -m benchmarks.chaos --takeover 10     # leader SIGKILL -> follower leads, 2 replicas

A local cluster of its own ("bench-chaos": its API server is stopped and started), a `git daemon`
serving a repository of three environments (each a few ConfigMaps and a Service in its own
namespace), and the daemon as a subprocess with leader election (its
identity from ``POD_NAME``, as deploy/ sets it). Every round applies 1 to ``--max-faults`` faults, each
around a push whose signed webhook is sent as a Git server would:

* ``git``: the Git server stops right after a push and comes back 0.5-3 s later (the webhook was
  accepted; the fetch fails until Git is back);
* ``apiserver``: kube-apiserver is killed mid-sync, stays down 0.5-4 s, and is started again;
* ``sigkill`` / ``sigterm``: the daemon is killed (or stopped) mid-sync and started again at once;
* ``flood``: 80 webhooks at once (signed redeliveries, unsigned and forged ones) around a push;
* ``pushes``: three pushes in quick succession, their webhooks sent concurrently.

Each push changes ConfigMaps (values, added, removed: prunes) and sometimes a Service's port. There is
no Deployment: after API server restarts the local control plane stops making them Available (its
kube-controller-manager first takes 5-60 s per rollout, failing with "read version ... is not as new
as written version"; after a few restarts kwok's node goes NotReady once and its pods are never Ready
again), and a sync waits for what it wrote to be healthy, so rounds would measure those controllers,
not the daemon. After the last fault of a round, it checks: the cluster equals the desired state of
the latest revision (every managed ConfigMap and Service, their contents, nothing pruned left) within
10 s; the inventory of each environment lists
exactly its desired objects; nothing outside them was touched (sentinel objects beside them keep their
resourceVersion, and the API server's audit log shows no write by the daemon to a name never in Git);
and no accepted webhook waited more than 2 s, from when Git was reachable, for its commit to be fetched
(webhooks whose daemon process died before fetching, or accepted while the API server was down, are
counted apart). It prints one line per round and the distribution of convergence times. ``run`` is
also what ``tests/e2e/test_chaos.py`` calls with 20 rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.devcluster import Cluster, ensure_toolchain, gitserver
from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import free_port
from reconciler.kube.client import USER_AGENT
from reconciler.server.webhooks import sign

ENVIRONMENTS = ("a", "b", "c")
CONTROL = "chaos-system"
OUTSIDE = "chaos-outside"
FAULTS = ("git", "apiserver", "sigkill", "sigterm", "flood", "pushes")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Bounds:
    """What a round must achieve: the issue's figures (the test passes wider ones on a loaded machine)."""

    converge: float = 10.0  # s from the end of the last fault to the desired state of the last push
    webhook: float = 2.0  # s an accepted webhook may wait for its fetch once Git is reachable
    give_up: float = 90.0  # s after which a round counts as not converged at all


@dataclass
class RoundResult:
    """What one round did and found."""

    index: int
    faults: list[str]
    convergence: float | None  # None: not converged within ``Bounds.give_up``
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Every round, the webhook waits, the daemon restarts."""

    rounds: list[RoundResult] = field(default_factory=list)
    webhook_waits: list[float] = field(default_factory=list)  # measured from Git reachable
    webhooks_lost_with_process: int = 0  # accepted, then the daemon died before fetching
    webhooks_during_api_outage: list[float] = field(default_factory=list)  # from the API server's return
    leading_after_restart: list[float] = field(default_factory=list)  # s from spawn to leading
    bounds: Bounds = field(default_factory=Bounds)

    @property
    def failures(self) -> list[str]:
        """Every check that failed, one line each."""
        lines = [f"round {r.index}: {p}" for r in self.rounds for p in r.problems]
        lines += [
            f"an accepted webhook waited {wait:.2f} s after Git was reachable (bound {self.bounds.webhook} s)"
            for wait in self.webhook_waits
            if wait > self.bounds.webhook
        ]
        return lines

    def print(self, out: Log) -> None:
        """The distribution of convergence times, the webhook waits, the restarts, and the failures."""
        times = [r.convergence for r in self.rounds if r.convergence is not None]
        out(f"rounds: {len(self.rounds)}; faults: {sum(len(r.faults) for r in self.rounds)}")
        counts = {name: sum(r.faults.count(name) for r in self.rounds) for name in FAULTS}
        out("faults by kind: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        out(f"convergence after the last fault (s): {_distribution(times)}")
        buckets = [(0, 1), (1, 2), (2, 5), (5, 10), (10, float("inf"))]
        out(
            "  histogram: "
            + ", ".join(f"[{low:g}-{high:g}) {sum(low <= t < high for t in times)}" for low, high in buckets)
            + f", never {len(self.rounds) - len(times)}"
        )
        out(f"accepted webhook -> fetched, from Git reachable (s): {_distribution(self.webhook_waits)}")
        out(
            f"  accepted during an API server outage, from its return (s): "
            f"{_distribution(self.webhooks_during_api_outage)}; "
            f"lost with a killed daemon process (fetched by its successor): {self.webhooks_lost_with_process}"
        )
        out(f"daemon restart -> leading again (s): {_distribution(self.leading_after_restart)}")
        failures = self.failures
        out(f"failed checks: {len(failures)}")
        for line in failures:
            out(f"  {line}")


def _git(*args: str, cwd: Path) -> str:
    return gitserver.git(*args, cwd=cwd, author="chaos", timeout=60)


def _distribution(values: list[float]) -> str:
    if not values:
        return "n=0"
    ordered = sorted(values)

    def pct(share: float) -> float:
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]

    return (
        f"n={len(ordered)} min {ordered[0]:.2f} p50 {statistics.median(ordered):.2f} "
        f"p90 {pct(0.9):.2f} p99 {pct(0.99):.2f} max {ordered[-1]:.2f}"
    )


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class Admin:
    """Synchronous requests to the cluster as its admin."""

    def __init__(self, cluster: Cluster) -> None:
        state = cluster.load_state()
        assert state is not None
        self.server = state.server
        self.context = ssl.create_default_context(cafile=str(cluster.pki_paths.ca_cert))
        self.context.load_cert_chain(str(cluster.pki_paths.admin_cert), str(cluster.pki_paths.admin_key))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Status and decoded body (0 and {} when the API server does not answer)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310
            self.server + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except OSError:
            return 0, {}


@dataclass
class EnvModel:
    """The desired state of one environment at the latest revision."""

    name: str
    config_maps: dict[str, str]
    port: int

    @property
    def namespace(self) -> str:
        return f"chaos-{self.name}"

    def documents(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.namespace},
                "data": {"value": value},
            }
            for name, value in sorted(self.config_maps.items())
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "app", "namespace": self.namespace},
                "spec": {"selector": {"app": "app"}, "ports": [{"name": "http", "port": self.port}]},
            }
        )
        return docs

    def keys(self) -> set[tuple[str, str, str]]:
        return {("ConfigMap", self.namespace, n) for n in self.config_maps} | {
            ("Service", self.namespace, "app")
        }


@dataclass
class Accepted:
    """A webhook the daemon answered "accepted"."""

    sha: str
    at: float  # epoch seconds


@dataclass
class Replica:
    """One daemon process: its configuration, port, pod name (its identity) and log."""

    config: Path
    port: int
    pod: str
    log_path: Path
    kustomize: Path
    process: subprocess.Popen[bytes] | None = None

    def spawn(self, *, leading: bool = True, timeout: float = 60.0) -> float:
        """Start it; seconds until it leads (``leading``) or else until it answers /healthz."""
        env = {**os.environ, "RECONCILER_KUSTOMIZE": str(self.kustomize), "POD_NAME": self.pod}
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.pod} exited with {self.process.returncode}")
            if self.leading() if leading else self.healthy():
                return time.monotonic() - started
            time.sleep(0.02)
        raise RuntimeError(f"{self.pod} did not {'lead' if leading else 'answer'} within {timeout:.0f} s")

    def _get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def healthy(self) -> bool:
        """True when /healthz answers 200."""
        return bool(self._get("/healthz"))

    def leading(self) -> bool:
        """True when the process reports itself the leader."""
        lines = self._get("/metrics").splitlines()
        return any(line.startswith("reconciler_leader ") and line.endswith(" 1.0") for line in lines)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the exit (SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"{self.pod} did not stop within 15 s of signal {sig}") from None


class Chaos:
    """The cluster, the Git server, the daemon, the model of what Git says, and the faults."""

    def __init__(self, cluster: Cluster, toolchain: Toolchain, root: Path, seed: int, log: Log) -> None:
        self.cluster = cluster
        self.toolchain = toolchain
        self.root = root
        self.rng = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self.log = log
        self.admin = Admin(cluster)
        self.work = root / "work"
        self.git_port = free_port()
        self.port = free_port()
        self.secret = secrets.token_hex(20)
        self.git_server: subprocess.Popen[bytes] | None = None
        self.daemon_log = root / "daemon.log"
        self.replica = Replica(
            root / "config.yaml", self.port, "reconciler-chaos-0", self.daemon_log, toolchain.kustomize
        )
        self.models = {
            name: EnvModel(name, {f"cm-{i}": "0" for i in range(3)}, 8000) for name in ENVIRONMENTS
        }
        self.pushed: list[str] = []  # every revision pushed, in order
        self.ever: set[tuple[str, str, str]] = set()  # every object any revision held
        self.accepted: list[Accepted] = []
        self.git_down: list[tuple[float, float]] = []  # epoch intervals
        self.api_down: list[tuple[float, float]] = []
        self.daemon_spawns: list[float] = []  # epoch
        self.sentinels: dict[str, str] = {}  # path -> resourceVersion
        self.audit_offset = 0
        self.report = Report()
        self._pushes = 0

    # -- set-up ------------------------------------------------------------------------------------
    def start(self) -> None:
        for name in (*[m.namespace for m in self.models.values()], OUTSIDE):
            self.admin.call(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
            path = f"/api/v1/namespaces/{name}/configmaps"
            sentinel = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "sentinel", "namespace": name},
                "data": {"note": "not in Git: never touched"},
            }
            status, body = self.admin.call("POST", path, sentinel)
            if status == 409:
                status, body = self.admin.call("GET", f"{path}/sentinel")
            self.sentinels[f"{path}/sentinel"] = body["metadata"]["resourceVersion"]
        bare = self.root / "envs.git"
        _git("init", "-q", "--bare", "-b", "main", str(bare), cwd=self.root)
        self.work.mkdir()
        _git("init", "-q", "-b", "main", cwd=self.work)
        _git("remote", "add", "origin", f"git://127.0.0.1:{self.git_port}/envs.git", cwd=self.work)
        self.git_server = gitserver.serve(self.root, self.git_port)
        self.push(webhook=False, message="initial")
        (self.root / "secret").write_text(self.secret)
        config = {
            "repository": {"url": f"git://127.0.0.1:{self.git_port}/envs.git", "poll_interval": "5s"},
            "clusters": [{"name": "local", "kubeconfig": str(self.cluster.kubeconfig_path)}],
            "environments": [
                {
                    "name": f"chaos-{m.name}",
                    "path": f"envs/{m.name}",
                    "namespaces": [m.namespace],
                    "health_timeout": 60,
                }
                for m in self.models.values()
            ],
            "webhooks": {"github": {"secret_file": str(self.root / "secret")}, "rate_limit": 2000},
            "leader_election": {"enabled": True, "namespace": CONTROL, "lease_name": "reconciler-chaos"},
            "listen": f"127.0.0.1:{self.port}",
            "cache_dir": str(self.root / "cache"),
            "inventory_namespace": CONTROL,
            "log_level": "info",
        }
        (self.root / "config.yaml").write_text(yaml.safe_dump(config))
        self.audit_offset = self._audit_size()
        self.spawn_daemon()
        deadline = time.monotonic() + 120
        while self.converged_problems():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no first convergence in 120 s: {self.converged_problems()}")
            time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.replica.stop()
        self.stop_git()

    # -- the pieces --------------------------------------------------------------------------------
    def spawn_daemon(self) -> None:
        self.daemon_spawns.append(time.time())
        self.report.leading_after_restart.append(self.replica.spawn())

    def stop_git(self) -> None:
        if self.git_server is not None:
            self.git_server.terminate()
            self.git_server.wait(10)
            self.git_server = None

    def webhook(self, sha: str, *, delivery: str = "", signed: bool = True, forged: bool = False) -> str:
        """Send a GitHub push event; the daemon's ``result`` ("" when it did not answer)."""
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        signature = sign("not-the-secret-0123456789" if forged else self.secret, body)
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery or secrets.token_hex(8),
            **({"X-Hub-Signature-256": f"sha256={signature}"} if signed else {}),
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/git", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                result = str(json.loads(response.read()).get("result", ""))
        except urllib.error.HTTPError as exc:
            result = str(json.loads(exc.read() or b"{}").get("result", exc.code))
        except OSError:
            return ""
        if result == "accepted":
            self.accepted.append(Accepted(sha, time.time()))
        return result

    def mutate(self) -> None:
        """Change one or two environments the way commits do."""
        for model in self.rng.sample(list(self.models.values()), self.rng.randint(1, 2)):
            action = self.rng.random()
            if action < 0.5 or len(model.config_maps) <= 1:
                name = self.rng.choice(sorted(model.config_maps))
                model.config_maps[name] = str(self._pushes)
            elif action < 0.7:
                model.config_maps[f"cm-{self._pushes}"] = str(self._pushes)
            elif action < 0.9:
                del model.config_maps[self.rng.choice(sorted(model.config_maps))]
            else:
                model.port = 8000 + self._pushes % 1000

    def push(self, *, webhook: bool = True, message: str = "") -> str:
        """Commit the model (changed first unless it is the first push) and push it."""
        if self.pushed:
            self.mutate()
        self._pushes += 1
        for model in self.models.values():
            directory = self.work / "envs" / model.name
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
            (directory / "objects.yaml").write_text(yaml.safe_dump_all(model.documents(), sort_keys=False))
            self.ever |= model.keys()
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "--allow-empty", "-m", message or f"push {self._pushes}", cwd=self.work)
        _git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        sha = _git("rev-parse", "HEAD", cwd=self.work)
        self.pushed.append(sha)
        if webhook:
            self.webhook(sha)
        return sha

    # -- faults ------------------------------------------------------------------------------------
    def fault_git(self) -> None:
        sha = self.push()
        down = time.time()
        self.stop_git()
        time.sleep(self.rng.uniform(0.2, 1.0))
        self.webhook(sha)  # a redelivery while Git is away: accepted, fetch fails
        time.sleep(self.rng.uniform(0.3, 2.0))
        self.git_server = gitserver.serve(self.root, self.git_port)
        self.git_down.append((down, time.time()))

    def fault_apiserver(self) -> None:
        self.push()
        time.sleep(self.rng.uniform(0.0, 1.0))
        state = self.cluster.load_state()
        assert state is not None
        down = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.pids["kube-apiserver"], signal.SIGKILL)
        time.sleep(self.rng.uniform(0.5, 4.0))
        self.cluster.restart("kube-apiserver", lambda _: None)
        self.api_down.append((down, time.time()))

    def _restart(self, sig: int) -> None:
        self.push()
        time.sleep(self.rng.uniform(0.0, 1.5))
        self.replica.stop(sig)
        self.spawn_daemon()

    def fault_sigkill(self) -> None:
        self._restart(signal.SIGKILL)

    def fault_sigterm(self) -> None:
        self._restart(signal.SIGTERM)

    def fault_flood(self) -> None:
        sha = self.push(webhook=False)
        redelivery = secrets.token_hex(8)
        calls: list[Callable[[], str]] = []
        for index in range(80):
            kind = index % 4
            if kind == 0:
                calls.append(lambda: self.webhook(sha))
            elif kind == 1:
                calls.append(lambda: self.webhook(sha, delivery=redelivery))
            elif kind == 2:
                calls.append(lambda: self.webhook(sha, signed=False))
            else:
                calls.append(lambda: self.webhook(secrets.token_hex(20), forged=True))
        self.rng.shuffle(calls)
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda call: call(), calls))

    def fault_pushes(self) -> None:
        shas = [self.push(webhook=False) for _ in range(3)]
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(self.webhook, shas))

    # -- checks ------------------------------------------------------------------------------------
    def converged_problems(self) -> list[str]:
        """What differs from the desired state of the latest revision ([] when nothing does)."""
        problems: list[str] = []
        for model in self.models.values():
            status, listing = self.admin.call(
                "GET",
                f"/api/v1/namespaces/{model.namespace}/configmaps"
                "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dreconciler",
            )
            if status != 200:
                return [f"API server answered {status}"]
            live = {i["metadata"]["name"]: (i.get("data") or {}).get("value") for i in listing["items"]}
            if live != model.config_maps:
                problems.append(f"{model.namespace} ConfigMaps {live} != {model.config_maps}")
            status, service = self.admin.call("GET", f"/api/v1/namespaces/{model.namespace}/services/app")
            port = service["spec"]["ports"][0]["port"] if status == 200 else 0
            if port != model.port:
                problems.append(f"{model.namespace} Service port {port} != {model.port}")
            status, inventory = self.admin.call(
                "GET", f"/api/v1/namespaces/{CONTROL}/configmaps/reconciler-inventory-chaos-{model.name}"
            )
            rows = json.loads((inventory.get("data") or {}).get("inventory.json") or "{}").get("objects", [])
            listed = {(row[1], row[2], row[3]) for row in rows}
            if listed != model.keys():
                problems.append(f"inventory of chaos-{model.name}: {sorted(listed ^ model.keys())} differ")
        return problems

    def untouched_problems(self) -> list[str]:
        """Writes outside what Git ever held: sentinels changed, or the audit log names one."""
        problems: list[str] = []
        for path, version in self.sentinels.items():
            status, body = self.admin.call("GET", path)
            if status != 200 or body["metadata"]["resourceVersion"] != version:
                problems.append(f"sentinel {path} was touched ({status})")
        namespaces = {m.namespace for m in self.models.values()} | {OUTSIDE}
        for event in self._audit_events():
            ref = event.get("objectRef") or {}
            if (
                not str(event.get("userAgent", "")).startswith(USER_AGENT)
                or event.get("verb") not in ("create", "update", "patch", "delete")
                or ref.get("namespace") not in namespaces
                or ref.get("resource") == "events"
                or "dryRun=" in str(event.get("requestURI", ""))
            ):
                continue
            kind = {"configmaps": "ConfigMap", "services": "Service"}.get(str(ref.get("resource")), "")
            if (kind, ref.get("namespace"), ref.get("name")) not in self.ever:
                problems.append(
                    f"the daemon wrote {ref.get('resource')}/{ref.get('namespace')}/{ref.get('name')}"
                )
        return problems

    def _audit_size(self) -> int:
        path = self.cluster.audit_log_path
        return path.stat().st_size if path.exists() else 0

    def _audit_events(self) -> Iterator[dict[str, Any]]:
        with self.cluster.audit_log_path.open("rb") as handle:
            handle.seek(self.audit_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.audit_offset += len(complete)
        for line in complete.splitlines():
            with contextlib.suppress(ValueError):
                yield json.loads(line)

    def fetches(self) -> list[tuple[float, str]]:
        """(epoch, short revision) of every fetch that moved a daemon process to a new revision."""
        found: list[tuple[float, str]] = []
        for line in self.daemon_log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"fetched"' in line:
                with contextlib.suppress(ValueError, KeyError):
                    event = json.loads(line)
                    if event.get("event") == "fetched":
                        found.append((_epoch(event["timestamp"]), str(event["revision"])))
        return found

    def measure_webhooks(self) -> None:
        """How long each accepted webhook waited for its commit (or a later one) to be fetched."""
        fetched = self.fetches()
        order = {sha: index for index, sha in enumerate(self.pushed)}
        for accepted in self.accepted:
            if accepted.sha not in order:
                continue  # a forged or unknown commit
            later = {sha[:12] for sha in self.pushed[order[accepted.sha] :]}
            times = [at for at, revision in fetched if revision in later]
            before = [at for at in times if at <= accepted.at]
            after = [at for at in times if at > accepted.at]
            if before:
                self.report.webhook_waits.append(0.0)
                continue
            if not after:
                continue  # not fetched yet: measured at the end of a later round
            fetched_at = min(after)
            if any(accepted.at < spawn < fetched_at for spawn in self.daemon_spawns):
                self.report.webhooks_lost_with_process += 1
                continue
            # fetched only after an API server outage that began before it (a replica that lost the Lease
            # passes webhooks on through it): measured from the API server's return, apart
            outage = [
                up for down, up in self.api_down if down <= fetched_at and accepted.at <= up <= fetched_at
            ]
            if outage:
                self.report.webhooks_during_api_outage.append(fetched_at - max(outage))
                continue
            reachable = max(
                [accepted.at] + [up for down, up in self.git_down if down <= fetched_at and up > accepted.at]
            )
            self.report.webhook_waits.append(max(0.0, fetched_at - reachable))
        self.accepted = [a for a in self.accepted if a.sha in order and not self._settled(a, fetched, order)]

    def _settled(self, accepted: Accepted, fetched: list[tuple[float, str]], order: dict[str, int]) -> bool:
        later = {sha[:12] for sha in self.pushed[order[accepted.sha] :]}
        return any(revision in later for _, revision in fetched)

    # -- rounds ------------------------------------------------------------------------------------
    def round(self, index: int, max_faults: int, bounds: Bounds) -> RoundResult:
        faults = [self.rng.choice(FAULTS) for _ in range(self.rng.randint(1, max_faults))]
        for fault in faults:
            getattr(self, f"fault_{fault}")()
        last_fault = time.monotonic()
        result = RoundResult(index, faults, None)
        problems = self.converged_problems()
        while problems and time.monotonic() - last_fault < bounds.give_up:
            time.sleep(0.05)
            problems = self.converged_problems()
        if problems:
            result.problems.append(f"not converged {bounds.give_up:.0f} s after the last fault: {problems}")
        else:
            result.convergence = time.monotonic() - last_fault
            if result.convergence > bounds.converge:
                result.problems.append(
                    f"converged {result.convergence:.2f} s after the last fault (bound {bounds.converge} s)"
                )
        result.problems += self.untouched_problems()
        self.measure_webhooks()
        return result


def run(
    cluster: Cluster,
    toolchain: Toolchain,
    *,
    rounds: int,
    seed: int = 16,
    max_faults: int = 3,
    bounds: Bounds | None = None,
    log: Log = print,
    workdir: Path | None = None,
) -> Report:
    """Run ``rounds`` rounds against ``cluster`` (which must be the chaos run's own: its API server is
    stopped and started) and return the report; prints one line per round."""
    bounds = bounds or Bounds()
    with tempfile.TemporaryDirectory(prefix="chaos-", dir=workdir) as tmp:
        chaos = Chaos(cluster, toolchain, Path(tmp), seed, log)
        chaos.report.bounds = bounds
        try:
            chaos.start()
            for index in range(1, rounds + 1):
                began = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
                result = chaos.round(index, max_faults, bounds)
                chaos.report.rounds.append(result)
                took = f"{result.convergence:6.2f} s" if result.convergence is not None else "   never"
                faults = "+".join(result.faults)
                log(f"round {index:3d} ({began} UTC): {took}  {faults:30s} {'; '.join(result.problems)}")
        finally:
            chaos.close()
            if workdir is not None:
                with contextlib.suppress(OSError):
                    (workdir / "chaos-daemon.log").write_bytes(chaos.daemon_log.read_bytes())
    return chaos.report


def takeover(
    cluster: Cluster, toolchain: Toolchain, *, rounds: int, log: Log = print
) -> tuple[list[float], list[float]]:
    """Two replicas with the default Lease settings: SIGKILL the leader ``rounds`` times and measure how
    long the other takes to lead (the killed one comes back as a follower, as the kubelet would do).
    Then one replica alone: SIGKILL it and start it again (same pod name) ``rounds`` times, and measure
    how long after its start it leads again. Returns both lists of seconds."""
    with tempfile.TemporaryDirectory(prefix="takeover-") as tmp:
        root = Path(tmp)
        chaos = Chaos(cluster, toolchain, root, 0, log)
        times: list[float] = []
        restarts: list[float] = []
        try:
            chaos.start()
            config = yaml.safe_load(chaos.replica.config.read_text())
            port = free_port()
            config.update(listen=f"127.0.0.1:{port}", cache_dir=str(root / "cache-1"))
            (root / "config-1.yaml").write_text(yaml.safe_dump(config))
            second = Replica(
                root / "config-1.yaml", port, "reconciler-chaos-1", root / "daemon-1.log", toolchain.kustomize
            )
            second.spawn(leading=False)
            replicas = [chaos.replica, second]
            for index in range(1, rounds + 1):
                leader = next(r for r in replicas if r.leading())
                follower = next(r for r in replicas if r is not leader)
                leader.stop(signal.SIGKILL)
                killed = time.monotonic()
                while not follower.leading():
                    if time.monotonic() - killed > 60:
                        raise RuntimeError("no takeover within 60 s")
                    time.sleep(0.02)
                times.append(time.monotonic() - killed)
                log(f"takeover {index:3d}: {times[-1]:.2f} s after SIGKILL of {leader.pod}")
                leader.spawn(leading=False)
            second.stop()
            alone = chaos.replica
            if not alone.leading():
                alone.stop(signal.SIGKILL)
                alone.spawn()
            for index in range(1, rounds + 1):
                alone.stop(signal.SIGKILL)
                restarts.append(alone.spawn(timeout=120))
                log(f"restart {index:3d}: leading {restarts[-1]:.2f} s after the process started")
        finally:
            chaos.close()
    return times, restarts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--max-faults", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--workdir", type=Path, help="keep the daemon log here")
    parser.add_argument(
        "--takeover", type=int, metavar="N", help="instead: SIGKILL the leader of two replicas N times"
    )
    args = parser.parse_args()
    toolchain = ensure_toolchain(lambda m: print(m, file=sys.stderr))
    cluster = Cluster("bench-chaos")
    cluster.up(lambda m: print(m, file=sys.stderr), nodes=1, toolchain=toolchain)
    started = time.monotonic()
    if args.takeover:
        try:
            times, restarts = takeover(cluster, toolchain, rounds=args.takeover)
            print(f"follower takes over after SIGKILL of the leader (s): {_distribution(times)}")
            print(
                f"replica restarted after SIGKILL leads again, from its start (s): {_distribution(restarts)}"
            )
        finally:
            if not args.keep:
                cluster.down(lambda m: print(m, file=sys.stderr))
        return
    try:
        report = run(
            cluster,
            toolchain,
            rounds=args.rounds,
            seed=args.seed,
            max_faults=args.max_faults,
            workdir=args.workdir,
        )
        print(f"{args.rounds} rounds in {time.monotonic() - started:.0f} s (seed {args.seed})")
        report.print(print)
    finally:
        if not args.keep:
            cluster.down(lambda m: print(m, file=sys.stderr))
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
