"""Benchmark (issue 14): one push touching every environment, synced by 1, 2 and 3 sharded replicas.

    .venv/bin/python -m benchmarks.scale_out [--environments 300] [--objects 10] [--replicas 1,2,3] [--keep]

A local cluster of its own ("bench-scale-out"), a `git daemon` serving one repository per configuration
(a base of ``--objects`` objects, ConfigMaps and one Service, and one overlay per environment that
prefixes their names), a post-receive hook that sends a signed webhook to the first replica, and the
replicas as subprocesses with ``sharding`` on (identity from ``POD_NAME``, as deploy/ sets it). For each
replica count, in one run and on the same cluster, with fresh namespaces and environment names
(``scale-r<N>``, environments ``r<N>-e000``...):

1. the replicas start, all at once; "cold start" is from their spawn until every environment is Ready
   at the first commit;
2. one push changes every ConfigMap of the base, so it touches every environment; "push -> all Ready"
   is from ``git push`` (whose hook sends the webhook) until every Environment object says Ready and
   Healthy with the pushed commit applied (the benchmark lists the Environment objects as the cluster's
   admin every ``--interval`` s, so that the replicas' CPU is not spent on being watched); first, p50 and
   p90 are when that many environments got there;
3. the ConfigMaps are read back (every one must carry the pushed version) and the API server's audit log
   says which replica wrote each object (each replica's user agent ends in ``replica/<identity>``).

Per replica: the environments it owns (its ``reconciler_shard_environments``), CPU seconds over the push
window (``/proc/<pid>/stat`` utime + stime; the kustomize renders it waited for, cutime + cstime, apart),
CPU since its start, and peak RSS since its start (``VmHWM``, kustomize not included). The API server's
and etcd's CPU over the push window too: on 2 cores they are the ceiling.

Between configurations the previous one's namespaces are deleted (and waited for): each replica watches
every object carrying reconciler's label of a kind it manages, whoever owns it, so leftovers would
inflate the next configuration's memory. ``--keep`` leaves the cluster, and the last configuration's
objects, running. Prints a table and ratios against the first configuration; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.chaos import Admin, Replica
from benchmarks.push_latency import git
from reconciler.devcluster import Cluster, ensure_toolchain, gitserver
from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import free_port, list_clusters

CLUSTER = "bench-scale-out"
ENVIRONMENTS_API = "/apis/reconciler.dev/v1alpha1/namespaces/{namespace}/environments"
WRITES = ("create", "update", "patch", "delete")


def log(message: str) -> None:
    """Progress on stderr (the results go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- /proc ----------------------------------------------------------------------------------------
def proc_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid``: its own (utime + stime) and its waited-for children's (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / ticks
    children = (int(fields[13]) + int(fields[14])) / ticks
    return own, children


def proc_peak_rss_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` since it started (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10])  # already counted in user and nice
    return (sum(values) - guest - idle) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    """CPU seconds of this process and the children it waited for (git, the webhook hook)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class Snapshot:
    """CPU counters at one moment: the machine, the replicas, the cluster's processes, this process."""

    machine: float
    replicas: dict[str, tuple[float, float]]  # pod -> (own, waited-for children)
    components: dict[str, float]  # cluster process name -> own
    bench: float

    @classmethod
    def take(cls, replicas: list[Replica], components: dict[str, int]) -> Snapshot:
        return cls(
            machine=machine_busy(),
            replicas={r.pod: proc_cpu(r.process.pid) for r in replicas if r.process is not None},
            components={name: proc_cpu(pid)[0] for name, pid in components.items()},
            bench=self_cpu(),
        )

    def ours(self) -> float:
        """Everything this benchmark runs: replicas (and their kustomize), the cluster, itself."""
        return sum(a + b for a, b in self.replicas.values()) + sum(self.components.values()) + self.bench


# -- the repository -------------------------------------------------------------------------------
@dataclass
class Repository:
    """One configuration's environments repository: a base of ``objects`` objects in ``namespace`` and
    ``environments`` overlays of it (``envs/eNNN``, name prefix ``eNNN-``)."""

    work: Path
    namespace: str
    environments: int
    objects: int

    @property
    def width(self) -> int:
        return max(3, len(str(self.environments - 1)))

    def overlay(self, index: int) -> str:
        return f"e{index:0{self.width}d}"

    @property
    def config_maps(self) -> int:
        """ConfigMaps per environment (one object is a Service when there are two or more)."""
        return self.objects - 1 if self.objects >= 2 else self.objects

    def write(self, version: int) -> None:
        """The base at ``version`` (every ConfigMap carries it) and, the first time, the overlays."""
        documents: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{index}", "namespace": self.namespace},
                "data": {"version": str(version), "index": str(index)},
            }
            for index in range(self.config_maps)
        ]
        if self.objects >= 2:
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "svc", "namespace": self.namespace},
                    "spec": {"selector": {"app": "scale"}, "ports": [{"port": 80, "targetPort": 8080}]},
                }
            )
        base = self.work / "base"
        base.mkdir(parents=True, exist_ok=True)
        (base / "objects.yaml").write_text(yaml.safe_dump_all(documents))
        (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
        for index in range(self.environments):
            directory = self.work / "envs" / self.overlay(index)
            if not directory.exists():
                directory.mkdir(parents=True)
                (directory / "kustomization.yaml").write_text(
                    f"resources: [../../base]\nnamePrefix: {self.overlay(index)}-\n"
                )

    def commit(self, version: int) -> str:
        """Write ``version``, commit it (not pushed) and return the commit."""
        self.write(version)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", f"every ConfigMap at version {version}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> None:
        git("push", "-q", "origin", "main", cwd=self.work)


# -- figures --------------------------------------------------------------------------------------
@dataclass
class ReplicaFigures:
    """One replica's share and costs."""

    pod: str
    owned: int = 0
    cpu_push: float = 0.0  # its own CPU s over the push window
    kustomize_push: float = 0.0  # its waited-for children's (kustomize) over the push window
    cpu_total: float = 0.0  # its own CPU s since it started
    peak_rss_mib: float = 0.0
    claims_lost: int = 0
    writes: int = 0  # objects it wrote in the push window (audit log)


@dataclass
class Figures:
    """One configuration's results."""

    replicas: int
    cold_start: float = 0.0
    push_all: float = 0.0
    push_first: float = 0.0
    push_p50: float = 0.0
    push_p90: float = 0.0
    objects_at_version: int = 0
    objects_expected: int = 0
    written_by_two: int = 0  # objects two replicas wrote in the push window
    apiserver_cpu: float = 0.0
    etcd_cpu: float = 0.0
    other_cpu: float = 0.0  # CPU s of processes not of this benchmark (other people's work) in the window
    lease_writes: int = 0  # Lease writes the API server answered in the window (nearly all the replicas')
    other_clusters: list[str] = field(default_factory=list)  # other local clusters running after the push
    per_replica: list[ReplicaFigures] = field(default_factory=list)

    @property
    def cpu_sum(self) -> float:
        return sum(r.cpu_push for r in self.per_replica)

    @property
    def kustomize_sum(self) -> float:
        return sum(r.kustomize_push for r in self.per_replica)

    @property
    def rss_max(self) -> float:
        return max(r.peak_rss_mib for r in self.per_replica)

    @property
    def rss_mean(self) -> float:
        return statistics.fmean(r.peak_rss_mib for r in self.per_replica)


def environment_statuses(admin: Admin, namespace: str) -> dict[str, dict[str, Any]]:
    """The ``status`` of every Environment object in ``namespace`` ({} when the listing fails)."""
    status, body = admin.call("GET", ENVIRONMENTS_API.format(namespace=namespace))
    if status != 200:
        return {}
    return {item["metadata"]["name"]: item.get("status") or {} for item in body.get("items", [])}


def is_done(status: dict[str, Any] | None, sha: str) -> bool:
    """Ready and Healthy, with ``sha`` applied."""
    if not status:
        return False
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return ready and status.get("revision") == sha and status.get("health") == "Healthy"


def lease_writes(admin: Admin) -> float:
    """Lease writes the API server has answered since it started (``apiserver_request_total``; they are
    not in the audit log). Besides the replicas', its own identity Lease and the node's heartbeat."""
    request = urllib.request.Request(admin.server + "/metrics")  # noqa: S310 - our own API server
    with urllib.request.urlopen(request, context=admin.context, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    writes = ('verb="POST"', 'verb="PUT"', 'verb="PATCH"', 'verb="DELETE"')
    for line in text.splitlines():
        leases = line.startswith("apiserver_request_total{") and 'resource="leases"' in line
        if leases and any(verb in line for verb in writes):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric(daemon: Replica, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels`` in the replica's /metrics (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Bench:
    """The cluster, the Git server and the configurations run on them."""

    def __init__(self, args: argparse.Namespace, cluster: Cluster, tools: Toolchain, root: Path) -> None:
        self.args = args
        self.cluster = cluster
        self.tools = tools
        self.root = root
        self.admin = Admin(cluster)
        self.git_port = free_port()
        self.secret = root / "webhook-secret"
        self.secret.write_text(secrets.token_hex(20))
        (root / "git").mkdir()
        self.git_server = gitserver.serve(root / "git", self.git_port)

    def close(self) -> None:
        self.git_server.terminate()
        self.git_server.wait(10)

    # -- the pieces ------------------------------------------------------------------------------
    def _namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        status, _ = self.admin.call("POST", "/api/v1/namespaces", body)
        if status not in (201, 409):
            raise RuntimeError(f"could not create namespace {name}: {status}")

    def delete_namespaces(self, names: list[str], timeout: float = 600.0) -> None:
        """Delete ``names`` and wait until they are gone."""
        for name in names:
            self.admin.call("DELETE", f"/api/v1/namespaces/{name}")
        deadline = time.monotonic() + timeout
        for name in names:
            while self.admin.call("GET", f"/api/v1/namespaces/{name}")[0] != 404:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"namespace {name} still there {timeout:.0f} s after its deletion")
                time.sleep(0.5)

    def _repository(self, replicas: int, namespace: str, port: int) -> tuple[Repository, str]:
        bare = self.root / "git" / f"r{replicas}.git"
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=self.root)
        work = self.root / f"work-r{replicas}"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        git("remote", "add", "origin", f"git://127.0.0.1:{self.git_port}/r{replicas}.git", cwd=work)
        repo = Repository(work, namespace, self.args.environments, self.args.objects)
        first = repo.commit(0)
        repo.push()
        gitserver.install_webhook_hook(bare, f"http://127.0.0.1:{port}/webhooks/git", self.secret)
        return repo, first

    def _replicas(self, replicas: int, repo: Repository, system: str, first_port: int) -> list[Replica]:
        environments = [
            {
                "name": f"r{replicas}-{repo.overlay(i)}",
                "path": f"envs/{repo.overlay(i)}",
                "namespaces": [repo.namespace],
            }
            for i in range(repo.environments)
        ]
        made = []
        for index in range(replicas):
            pod = f"scale-r{replicas}-{index}"
            port = first_port if index == 0 else free_port()
            config: dict[str, Any] = {
                "repository": {
                    "url": f"git://127.0.0.1:{self.git_port}/r{replicas}.git",
                    "poll_interval": "1h",
                },
                "clusters": [{"name": "bench", "kubeconfig": str(self.cluster.kubeconfig_path)}],
                "environments": environments,
                "webhooks": {"github": {"secret_file": str(self.secret)}},
                "leader_election": {"namespace": system},
                "sharding": {
                    "enabled": True,
                    "group": f"r{replicas}",
                    "lease_duration": "10s",
                    "renew_interval": "2s",
                    "safety_margin": "2s",
                },
                "inventory_namespace": system,
                "listen": f"127.0.0.1:{port}",
                "cache_dir": str(self.root / f"cache-{pod}"),
                "log_level": self.args.log_level,
                "kustomize": str(self.tools.kustomize),
            }
            if self.args.workers:
                config["workers"] = self.args.workers
            path = self.root / f"{pod}.yaml"
            path.write_text(yaml.safe_dump(config))
            made.append(Replica(path, port, pod, self.root / f"{pod}.log", self.tools.kustomize))
        return made

    def _wait_done(
        self, system: str, names: list[str], sha: str, started: float, replicas: list[Replica], what: str
    ) -> list[float]:
        """Seconds from ``started`` at which each environment was first seen done at ``sha``, sorted."""
        done: dict[str, float] = {}
        deadline = started + self.args.timeout
        while True:
            statuses = environment_statuses(self.admin, system)
            now = time.monotonic()
            for name in names:
                if name not in done and is_done(statuses.get(name), sha):
                    done[name] = now - started
            if len(done) == len(names):
                return sorted(done.values())
            for replica in replicas:
                if replica.process is not None and replica.process.poll() is not None:
                    raise RuntimeError(f"{replica.pod} exited with {replica.process.returncode} ({what})")
            if now > deadline:
                missing = sorted(set(names) - set(done))
                raise RuntimeError(
                    f"{what}: {len(done)}/{len(names)} done after {self.args.timeout:.0f} s; e.g. "
                    f"{missing[0]}: {statuses.get(missing[0])}"
                )
            time.sleep(self.args.interval)

    def _objects_at(self, namespace: str, version: int) -> int:
        status, body = self.admin.call(
            "GET",
            f"/api/v1/namespaces/{namespace}/configmaps?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dreconciler",
        )
        if status != 200:
            return 0
        return sum(
            1 for item in body.get("items", []) if (item.get("data") or {}).get("version") == str(version)
        )

    def _audit_writers(self, offset: int, namespace: str) -> dict[str, set[str]]:
        """Object -> the replicas that wrote it in ``namespace`` since ``offset`` of the audit log."""
        writers: dict[str, set[str]] = defaultdict(set)
        with self.cluster.audit_log_path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            agent = str(event.get("userAgent", ""))
            if (
                " replica/" in agent
                and ref.get("namespace") == namespace
                and event.get("verb") in WRITES
                and "dryRun=" not in str(event.get("requestURI", ""))
            ):
                writers[f"{ref.get('resource')}/{ref.get('name')}"].add(agent.rsplit("replica/", 1)[1])
        return writers

    def _pids(self) -> dict[str, int]:
        """The cluster's processes (etcd, kube-apiserver, the controllers, kwok) by name."""
        state = self.cluster.load_state()
        if state is None:
            raise RuntimeError(f"cluster {self.cluster.name!r} recorded no state")
        return dict(state.pids)

    # -- one configuration -----------------------------------------------------------------------
    def configuration(self, replicas: int) -> Figures:
        """Run ``replicas`` sharded replicas through a cold start and one push touching everything."""
        figures = Figures(replicas)
        namespace, system = f"scale-r{replicas}", f"scale-r{replicas}-system"
        self._namespace(namespace)
        self._namespace(system)
        port = free_port()
        repo, first = self._repository(replicas, namespace, port)
        processes = self._replicas(replicas, repo, system, port)
        names = [f"r{replicas}-{repo.overlay(i)}" for i in range(repo.environments)]
        try:
            spawned = time.monotonic()
            # all at once, as a Deployment's pods start
            with ThreadPoolExecutor(max_workers=len(processes)) as pool:
                list(pool.map(lambda replica: replica.spawn(leading=False, timeout=120), processes))
            log(f"{replicas} replica(s) answering; waiting for the first sync of {len(names)} environments")
            figures.cold_start = self._wait_done(system, names, first, spawned, processes, "cold start")[-1]
            log(f"cold start: every environment Ready after {figures.cold_start:.1f} s")

            sha = repo.commit(1)
            pids = self._pids()
            audit_offset = self.cluster.audit_log_path.stat().st_size
            leases_before = lease_writes(self.admin)
            before = Snapshot.take(processes, pids)
            pushed = time.monotonic()
            repo.push()
            times = self._wait_done(system, names, sha, pushed, processes, "the push")
            after = Snapshot.take(processes, pids)
            figures.lease_writes = int(lease_writes(self.admin) - leases_before)
            figures.push_all, figures.push_first = times[-1], times[0]
            figures.push_p50, figures.push_p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
            figures.apiserver_cpu = after.components["kube-apiserver"] - before.components["kube-apiserver"]
            figures.etcd_cpu = after.components["etcd"] - before.components["etcd"]
            figures.other_cpu = (after.machine - before.machine) - (after.ours() - before.ours())
            figures.other_clusters = other_clusters()
            log(f"push -> all Ready: {figures.push_all:.1f} s")

            figures.objects_expected = repo.environments * repo.config_maps
            figures.objects_at_version = self._objects_at(namespace, 1)
            writers = self._audit_writers(audit_offset, namespace)
            figures.written_by_two = sum(1 for who in writers.values() if len(who) > 1)
            writes = Counter(pod for who in writers.values() for pod in who)
            for replica in processes:
                assert replica.process is not None
                own, _ = proc_cpu(replica.process.pid)
                figures.per_replica.append(
                    ReplicaFigures(
                        pod=replica.pod,
                        owned=int(metric(replica, "reconciler_shard_environments", replica=replica.pod)),
                        cpu_push=after.replicas[replica.pod][0] - before.replicas[replica.pod][0],
                        kustomize_push=after.replicas[replica.pod][1] - before.replicas[replica.pod][1],
                        cpu_total=own,
                        peak_rss_mib=proc_peak_rss_mib(replica.process.pid),
                        claims_lost=int(
                            metric(
                                replica, "reconciler_shard_handovers_total", replica=replica.pod, event="lost"
                            )
                        ),
                        writes=writes.get(replica.pod, 0),
                    )
                )
        finally:
            for replica in processes:
                try:
                    replica.stop(signal.SIGTERM)
                except RuntimeError as exc:
                    log(str(exc))
        return figures


# -- report ---------------------------------------------------------------------------------------
def report(args: argparse.Namespace, results: list[Figures], notes: list[str]) -> None:
    """The tables and the ratios against the first configuration, on stdout."""
    objects = (
        f"{args.objects - 1} ConfigMaps + 1 Service" if args.objects >= 2 else f"{args.objects} ConfigMap"
    )
    print(
        f"scale_out: {args.environments} environments x {args.objects} objects ({objects}), one push touching "
        "every environment; sharding on, the webhook sent to the first replica"
    )
    print(
        "times in s from the first spawn (cold) and from `git push` (push); CPU s over the push window: the "
        "replicas' own, their kustomize renders, the API server, etcd, and processes this benchmark did not "
        "start (others: other people's work on the machine); lease writes: answered by the API server in the window"
    )
    print()
    print(
        f"{'replicas':>8}  {'cold':>5}  {'push':>5}  {'first/p50/p90':>15}  {'CPU':>5}  {'kust.':>5}  "
        f"{'apisrv':>6}  {'etcd':>5}  {'others':>6}  {'lease writes':>12}  {'at version':>11}  {'2 writers':>9}"
    )
    for f in results:
        print(
            f"{f.replicas:>8}  {f.cold_start:>5.1f}  {f.push_all:>5.1f}  "
            f"{f.push_first:>4.1f}/{f.push_p50:>4.1f}/{f.push_p90:>5.1f}  {f.cpu_sum:>5.1f}  "
            f"{f.kustomize_sum:>5.1f}  {f.apiserver_cpu:>6.1f}  {f.etcd_cpu:>5.1f}  {f.other_cpu:>6.1f}  "
            f"{f.lease_writes:>12}  {f.objects_at_version:>5}/{f.objects_expected:<5}  {f.written_by_two:>9}"
        )
    print()
    print("per replica: objects it wrote, CPU s over the push window; CPU s and peak RSS since its start")
    print(
        f"{'replicas':>8}  {'replica':<14}  {'owned':>5}  {'written':>7}  {'CPU':>5}  {'kust.':>5}  "
        f"{'CPU total':>9}  {'peak RSS':>9}  {'claims lost':>11}"
    )
    for f in results:
        for r in f.per_replica:
            print(
                f"{f.replicas:>8}  {r.pod:<14}  {r.owned:>5}  {r.writes:>7}  {r.cpu_push:>5.1f}  "
                f"{r.kustomize_push:>5.1f}  {r.cpu_total:>9.1f}  {r.peak_rss_mib:>6.0f}MiB  {r.claims_lost:>11}"
            )
    if len(results) > 1:
        base = results[0]
        print()
        print(f"ratios against {base.replicas} replica(s) (below 1: less):")
        for f in results[1:]:
            print(
                f"  {f.replicas} replicas: push -> all Ready x{f.push_all / base.push_all:.2f}, "
                f"cold start x{f.cold_start / base.cold_start:.2f}, "
                f"replicas' CPU (sum, with kustomize) "
                f"x{(f.cpu_sum + f.kustomize_sum) / (base.cpu_sum + base.kustomize_sum):.2f}, "
                f"API server CPU x{f.apiserver_cpu / base.apiserver_cpu:.2f}, "
                f"peak RSS per replica x{f.rss_max / base.rss_max:.2f} (max), x{f.rss_mean / base.rss_mean:.2f} "
                f"(mean; 1/N would be {base.replicas / f.replicas:.2f})"
            )
    for f in results:
        if f.other_clusters:
            print(
                f"{f.replicas} replica(s): other local clusters running after the push: {', '.join(f.other_clusters)}"
            )
    for note in notes:
        print(note)


def other_clusters() -> list[str]:
    """The local clusters other than this benchmark's that are running (they share the cores)."""
    return [c.name for c in list_clusters() if c.name != CLUSTER and c.status().state != "stopped"]


def run(args: argparse.Namespace) -> None:
    """Every configuration on one cluster; the report."""
    started = time.monotonic()
    counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--replicas: a comma-separated list of counts, each at least 1")
    tools = ensure_toolchain(log)
    others = other_clusters()
    if others:
        log(f"other local clusters are running ({', '.join(others)}): they share these cores")
    cluster = Cluster(CLUSTER)
    cluster.up(log, nodes=1, toolchain=tools)
    results: list[Figures] = []
    failures: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
            bench = Bench(args, cluster, tools, Path(tmp))
            try:
                for index, replicas in enumerate(counts):
                    if index:
                        previous = counts[index - 1]
                        log(f"deleting the namespaces of {previous} replica(s)")
                        bench.delete_namespaces([f"scale-r{previous}", f"scale-r{previous}-system"])
                    log(f"-- {replicas} replica(s)")
                    try:
                        results.append(bench.configuration(replicas))
                    except RuntimeError as exc:  # the others still run; the report says what failed
                        log(f"{replicas} replica(s) failed: {exc}")
                        failures.append(f"{replicas} replica(s): not measured: {exc}")
            finally:
                bench.close()
                if args.log_copy:
                    args.log_copy.mkdir(parents=True, exist_ok=True)
                    for path in Path(tmp).glob("scale-r*.log"):
                        (args.log_copy / path.name).write_bytes(path.read_bytes())
    finally:
        if not args.keep:
            cluster.down(log)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    notes = [
        f"\n{os.cpu_count()} CPUs; load average at the end: {load}; {time.monotonic() - started:.0f} s in all"
    ]
    if others:
        notes.append(f"other local clusters running at the start: {', '.join(others)}")
    report(args, results, notes + failures)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--environments", type=int, default=300)
    parser.add_argument("--objects", type=int, default=10, help="objects per environment (one is a Service)")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, in order (default 1,2,3)")
    parser.add_argument("--workers", type=int, default=0, help="workers per replica (default: the daemon's)")
    parser.add_argument("--interval", type=float, default=0.5, help="s between listings of the Environments")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="s to wait for a cold start or the push"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the cluster (and the last objects) running"
    )
    parser.add_argument("--log-level", default="warning", help="the replicas' log level")
    parser.add_argument("--log-copy", type=Path, help="copy the replicas' logs into this directory")
    args = parser.parse_args()
    if args.environments < 1 or args.objects < 1:
        parser.error("--environments and --objects must be at least 1")
    run(args)


if __name__ == "__main__":
    main()
