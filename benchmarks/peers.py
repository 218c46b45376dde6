"""Benchmark (issue 17): one workload to Healthy through reconciler and its peers, side by side.

    .venv/bin/python -m benchmarks.peers [--rounds 3] [--objects 1000] [--tools cli,kubectl,...] [--keep]

The workload is N/10 namespaces, each holding a 10-object app (benchmarks.sync_1000.app), so 1,000
objects by default (``--objects 5000`` for the large case). Every round, with fresh namespaces per tool
(``peers-<tool>-r<round>-NNN``), and the tools in a rotating (interleaved) order:

- ``cli``: ``reconciler sync`` (the one-shot CLI) on a kustomization of the objects; it exits 0 only
  when everything is applied and Healthy.
- ``kubectl``: ``kubectl apply --server-side`` of the same objects (already rendered), then
  ``kubectl wait --for=condition=Available`` on the Deployments.
- ``kubectl-k``: the same with ``-k`` on the kustomization the CLI gets: kubectl renders it with its
  built-in kustomize, so both start from the same input (the CLI's wall time includes its render).
- ``daemon``: ``reconciler run`` against a local Git repository served over git:// (git daemon) with the
  post-receive hook that sends a signed webhook. The daemon is started for its slot only (so it does
  not burn CPU watching the other tools' objects), on a repository whose environment holds one of the
  round's namespaces; the timed part is from ``git push`` of the whole environment to the status API
  reporting it Ready and Healthy at the pushed revision (poll every 0.1 s).
- ``floor``: a raw-writes floor: this process writes the objects with server-side apply PATCHes from
  a small asyncio client (namespaces first, then the rest, 32 in flight), waiting for nothing.

After the rounds, the last CLI environment is synced again unchanged (no-op) and then with one
ConfigMap changed.

How things are measured:

- wall time: the tool's command(s), start to exit (daemon: push to Healthy).
- writes: the API server's audit log (``clusters/<name>/logs/audit.log``, writes only), by the
  user agent of the tool (``reconciler/``, ``kubectl``, ``peers-floor``) within the tool's time
  window; dry-run writes counted apart.
- reads: ``apiserver_request_total`` deltas by verb over the tool's window for the workload's kinds
  (watches excluded). These name no client: controllers' reads in the window are included too (they
  read through informers, so it is small).
- client CPU: user + system from the child's rusage (``os.wait4``), which includes its own waited
  children (kustomize under the CLI); daemon: /proc utime + stime + cutime + cstime over the window.
  The CLI runs with Python's bytecode cache allowed, as an installed reconciler does.
- peak RSS: the child's ru_maxrss (the largest of it and its waited children); daemon: its own VmHWM
  since start (kustomize, in its own process, not included).

Prints figures; asserts nothing. Starts a local cluster named "peers" (with enough kwok nodes for every
round's pods) and removes it afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.sync_1000 import RESOURCES, app
from reconciler.devcluster import Cluster, ensure_toolchain, gitserver
from reconciler.devcluster.cluster import free_port, list_clusters
from reconciler.kube import KubeClient
from reconciler.kube.errors import NotFoundError

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
TOOLS = ("cli", "kubectl", "kubectl-k", "daemon", "floor")
USER_AGENTS = {
    "cli": "reconciler/",
    "kubectl": "kubectl",
    "kubectl-k": "kubectl",
    "daemon": "reconciler/",
    "floor": "peers-floor",
}
KINDS = (  # the workload's kinds (benchmarks.sync_1000.app)
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
)
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
SECRET = "peers-benchmark-webhook-secret-0123456789"  # noqa: S105 (a throwaway local server)
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def git(*args: str, cwd: Path) -> str:
    return gitserver.git(*args, cwd=cwd, author="bench", timeout=300)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Figures:
    """What one tool did in one round (or one CLI re-sync)."""

    seconds: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    writes: Counter[str] = field(default_factory=Counter)
    dry_run: Counter[str] = field(default_factory=Counter)
    reads: Counter[str] = field(default_factory=Counter)
    extra: dict[str, float] = field(default_factory=dict)
    ok: bool = True

    @property
    def requests(self) -> int:
        return sum(self.writes.values()) + sum(self.dry_run.values()) + sum(self.reads.values())


@dataclass
class Child:
    """Exit code and rusage of one finished child process."""

    code: int
    seconds: float
    cpu: float
    rss_mib: float
    stderr: str = ""
    stdout: str = ""


def run_child(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Child:
    """Run a command to completion; its wall time, CPU (user + system, waited children included),
    peak RSS from os.wait4, and its standard output."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    return Child(
        process.returncode,
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        text[-2000:],
        stdout,
    )


def _installed_like() -> dict[str, str]:
    """This environment, but with Python's bytecode cache allowed: an installed reconciler (pip, the
    Docker image) starts from compiled modules, so the CLI's CPU is measured that way too, rather than
    compiling its sources on every start when PYTHONDONTWRITEBYTECODE is set here."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def write_environment(directory: Path, objects: list[dict[str, Any]]) -> None:
    """A kustomization of ``objects`` (one multi-document file)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    (directory / "kustomization.yaml").write_text("resources: [app.yaml]\n")


def workload(prefix: str, namespaces: int) -> list[dict[str, Any]]:
    return [obj for index in range(namespaces) for obj in app(prefix, index)]


class Meter:
    """Request counts from the API server: the audit log (writes, per user agent) and
    apiserver_request_total (reads, all clients)."""

    def __init__(self, kube: KubeClient, audit_log: Path) -> None:
        self.kube = kube
        self.audit_log = audit_log

    async def reads(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for line in (await self.kube.text("/metrics")).splitlines():
            match = _SAMPLE.match(line)
            if not match:
                continue
            labels = dict(_LABEL.findall(match.group("labels")))
            if (
                labels.get("resource") in RESOURCES
                and not labels.get("subresource")
                and labels.get("verb") in ("GET", "LIST")
            ):
                counts[labels["verb"]] += int(float(match.group("value")))
        return counts

    async def mark(self) -> tuple[int, Counter[str]]:
        await self._flush()
        return self.audit_log.stat().st_size, await self.reads()

    async def _flush(self) -> str:
        """A marker write (DELETE of a ConfigMap that does not exist), waited for in the audit log, so
        every request that completed before it is in the log."""
        marker = f"peers-marker-{secrets.token_hex(6)}"
        with contextlib.suppress(NotFoundError):
            await self.kube.request("DELETE", f"/api/v1/namespaces/default/configmaps/{marker}")
        deadline = time.monotonic() + 15
        while marker.encode() not in self._tail(200_000) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return marker

    def _tail(self, size: int) -> bytes:
        with self.audit_log.open("rb") as handle:
            handle.seek(max(0, self.audit_log.stat().st_size - size))
            return handle.read()

    async def since(self, mark: tuple[int, Counter[str]], user_agent: str, figures: Figures) -> None:
        """Fill ``figures``' writes, dry-run writes and reads with what happened since ``mark``."""
        await self._flush()
        reads = await self.reads()
        figures.reads = Counter({k: v for k, v in (reads - mark[1]).items() if v})
        with self.audit_log.open("rb") as handle:
            handle.seek(mark[0])
            data = handle.read()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            verb = str(event.get("verb"))
            if (
                not str(event.get("userAgent", "")).startswith(user_agent)
                or verb not in WRITE_VERBS
                or ref.get("subresource")
                or str(ref.get("name", "")).startswith("peers-marker-")
            ):
                continue
            if "dryRun=" in str(event.get("requestURI", "")):
                figures.dry_run[verb] += 1
            else:
                figures.writes[verb] += 1


@dataclass
class Bench:
    args: argparse.Namespace
    kubeconfig: Path
    kustomize: Path
    meter: Meter
    kube: KubeClient
    root: Path
    git_port: int = 0
    work: Path = field(default_factory=Path)

    @property
    def namespaces(self) -> int:
        return max(1, int(self.args.objects) // 10)

    # -- (a) the one-shot CLI --------------------------------------------------------------------
    async def cli(self, name: str, directory: Path) -> Figures:
        argv = [
            sys.executable,
            "-m",
            "reconciler.cli",
            "sync",
            str(directory),
            "--repo-root",
            str(self.root),
            "--kubeconfig",
            str(self.kubeconfig),
            "--environment",
            name,
            "--timeout",
            "900",
            "--render-timeout",
            "900",
            "--output",
            "json",
        ]
        env = {**_installed_like(), "RECONCILER_KUSTOMIZE": str(self.kustomize)}
        mark = await self.meter.mark()
        child = run_child(argv, env=env)
        figures = Figures(child.seconds, child.cpu, child.rss_mib, ok=child.code == 0)
        if child.code != 0:
            log(f"reconciler sync {name} exited {child.code}: {child.stderr}")
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            output = json.loads(child.stdout)
            result = output[0] if isinstance(output, list) else output
            durations = {str(k): float(v) for k, v in result["durations"].items()}
            # the write phase: reading live state, the dry-run validation and the applies; no render,
            # no health waits (kubectl's apply alone is its counterpart)
            figures.extra["write_seconds"] = sum(durations.get(k, 0.0) for k in ("plan", "validate", "apply"))
            figures.extra["render_seconds"] = durations.get("render", 0.0)
        await self.meter.since(mark, USER_AGENTS["cli"], figures)
        return figures

    # -- (b) kubectl apply --server-side + kubectl wait ----------------------------------------------
    async def kubectl(self, name: str, objects: list[dict[str, Any]], *, kustomize: bool = False) -> Figures:
        """kubectl apply --server-side + wait: of the rendered objects, or (``kustomize``) of the same
        kustomization the CLI gets (``-k``: kubectl renders it with its built-in kustomize)."""
        directory = self.root / "kubectl" / name
        directory.mkdir(parents=True)
        if kustomize:
            write_environment(directory, objects)
            source = ["-k", str(directory)]
        else:
            (directory / "all.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
            source = ["-f", str(directory / "all.yaml")]
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        (directory / "deployments.yaml").write_text(yaml.safe_dump_all(deployments, sort_keys=False))
        base = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig)]
        mark = await self.meter.mark()
        apply = run_child(
            [
                *base,
                "apply",
                "--server-side",
                "--field-manager",
                "peers-kubectl",
                *source,
            ]
        )
        wait = run_child(
            [
                *base,
                "wait",
                "--for=condition=Available",
                "--timeout=900s",
                "-f",
                str(directory / "deployments.yaml"),
            ]
        )
        figures = Figures(
            apply.seconds + wait.seconds,
            apply.cpu + wait.cpu,
            max(apply.rss_mib, wait.rss_mib),
            ok=apply.code == 0 and wait.code == 0,
            extra={"apply_seconds": apply.seconds, "apply_cpu": apply.cpu},
        )
        for child in (apply, wait):
            if child.code != 0:
                log(f"kubectl exited {child.code}: {child.stderr}")
        await self.meter.since(mark, USER_AGENTS["kubectl"], figures)
        return figures

    # -- (c) the daemon -------------------------------------------------------------------------
    def setup_git(self) -> None:
        base = self.root / "git"
        base.mkdir()
        git("init", "-q", "--bare", "-b", "main", str(base / "envs.git"), cwd=self.root)
        self.work = self.root / "work"
        self.work.mkdir()
        git("init", "-q", "-b", "main", cwd=self.work)
        (self.work / "README").write_text("peers benchmark\n")
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", "initial", cwd=self.work)
        self.git_port = free_port()
        self.git_server = gitserver.serve(base, self.git_port)
        git("remote", "add", "origin", self.url, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.git_port}/envs.git"

    def commit(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    async def daemon(self, name: str, objects: list[dict[str, Any]]) -> Figures:
        # the environment exists before the daemon starts, holding only its first namespace (part of
        # the workload); the push then adds the other objects
        write_environment(self.work / name, objects[:1])
        self.commit(f"{name}: placeholder")
        git("push", "-q", "origin", "main", cwd=self.work)
        port = free_port()
        secret = self.root / "webhook-secret"
        secret.write_text(SECRET)
        gitserver.install_webhook_hook(
            self.root / "git" / "envs.git", f"http://127.0.0.1:{port}/webhooks/git", secret
        )
        config = {
            "repository": {"url": self.url, "branch": "main", "poll_interval": "1h"},
            "clusters": [{"name": "local", "kubeconfig": str(self.kubeconfig)}],
            "environments": [{"name": name, "path": name, "namespaces": ["*"], "cluster_scoped": ["*"]}],
            "webhooks": {"github": {"secret_file": str(secret)}},
            "leader_election": {"enabled": False},
            "listen": f"127.0.0.1:{port}",
            "cache_dir": str(self.root / f"cache-{name}"),
            "log_level": "warning",
            "kustomize": str(self.kustomize),
        }
        config_path = self.root / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "run", "--config", str(config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RECONCILER_KUSTOMIZE": str(self.kustomize)},
            )
        figures = Figures(ok=False)
        # the daemon watches every object carrying reconciler's label, the earlier CLI rounds' too:
        # their number is printed with its RSS
        figures.extra["labelled_before"] = float(await self._labelled())
        try:
            first = git("rev-parse", "HEAD", cwd=self.work)
            if not await self._until_healthy(port, name, first, process, 300):
                log(f"daemon {name}: placeholder never Healthy:\n{log_path.read_text()[-3000:]}")
                return figures
            write_environment(self.work / name, objects)
            sha = self.commit(f"{name}: the workload")
            mark = await self.meter.mark()
            cpu_before = _proc_cpu(process.pid)
            started = time.perf_counter()
            git("push", "-q", "origin", "main", cwd=self.work)
            figures.ok = await self._until_healthy(port, name, sha, process, 900)
            figures.seconds = time.perf_counter() - started
            figures.cpu = _proc_cpu(process.pid) - cpu_before
            figures.rss_mib = _proc_hwm_mib(process.pid)
            await self.meter.since(mark, USER_AGENTS["daemon"], figures)
            if not figures.ok:
                log(f"daemon {name}: not Healthy:\n{log_path.read_text()[-3000:]}")
        finally:
            process.terminate()
            _, _, usage = await asyncio.to_thread(os.wait4, process.pid, 0)
            process.returncode = 0
            figures.extra["rss_with_children_mib"] = usage.ru_maxrss / 1024
        return figures

    async def _labelled(self) -> int:
        """Objects of the workload's kinds that carry reconciler's managed-by label."""
        count = 0
        for api_version, kind in KINDS:
            info = await self.kube.resource(api_version, kind)
            items, _ = await self.kube.list(info, label_selector="app.kubernetes.io/managed-by=reconciler")
            count += len(items)
        return count

    async def _until_healthy(
        self, port: int, name: str, sha: str, process: subprocess.Popen[bytes], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                state = await asyncio.to_thread(_status, port, name)
                if (
                    state.get("revision") == sha
                    and state.get("condition") == "Ready"
                    and state.get("health") == "Healthy"
                ):
                    return True
            except (OSError, ValueError, urllib.error.HTTPError):
                pass
            await asyncio.sleep(0.1)
        return False

    # -- the raw-writes floor ----------------------------------------------------------------------
    async def floor(self, objects: list[dict[str, Any]]) -> Figures:
        client = await KubeClient.from_kubeconfig(self.kubeconfig)
        client.api.user_agent = "peers-floor/1"
        try:
            paths = []
            for obj in objects:
                info = await client.resource(obj["apiVersion"], obj["kind"])
                meta = obj["metadata"]
                paths.append(info.path(meta.get("namespace", ""), meta["name"]))
            query = [("fieldManager", "peers-floor"), ("force", "true")]

            async def put(items: Iterable[tuple[str, dict[str, Any]]]) -> None:
                await asyncio.gather(
                    *(
                        client.request(
                            "PATCH", path, query=query, body=obj, content_type="application/apply-patch+yaml"
                        )
                        for path, obj in items
                    )
                )

            pairs = list(zip(paths, objects, strict=True))
            mark = await self.meter.mark()
            cpu = time.process_time()
            started = time.perf_counter()
            await put(p for p in pairs if p[1]["kind"] == "Namespace")
            await put(p for p in pairs if p[1]["kind"] != "Namespace")
            figures = Figures(time.perf_counter() - started, time.process_time() - cpu)
            await self.meter.since(mark, USER_AGENTS["floor"], figures)
        finally:
            await client.close()
        # untimed and uncounted: let the controllers finish these Deployments, so that the next tool
        # does not pay for them
        deployments = self.root / f"floor-{secrets.token_hex(4)}.yaml"
        deployments.write_text(yaml.safe_dump_all([o for o in objects if o["kind"] == "Deployment"]))
        wait = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "wait", "--for=condition=Available"]
        settled = run_child([*wait, "--timeout=900s", "-f", str(deployments)])
        figures.extra["settle_seconds"] = settled.seconds
        return figures


def _status(port: int, name: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/environments/{name}"
    with urllib.request.urlopen(url, timeout=5) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime


def _proc_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- report ------------------------------------------------------------------------------------------
def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def verbs(counters: list[Counter[str]]) -> str:
    keys = sorted({k for c in counters for k in c})
    return " ".join(f"{k}={spread([float(c.get(k, 0)) for c in counters], '{:.0f}')}" for k in keys) or "none"


def extra(runs: list[Figures], name: str, fmt: str = "{:.1f}") -> str:
    """Median [min-max] of one extra figure over ``runs`` (0 where a run lacks it)."""
    return spread([r.extra.get(name, 0.0) for r in runs], fmt)


def report(results: dict[str, list[Figures]], resyncs: dict[str, Figures], objects: int) -> None:
    rounds = max(len(runs) for runs in results.values())
    print(f"\n== {objects} objects per tool and round, {rounds} round(s); median [min-max] ==")
    header = f"{'tool':<10}{'wall s':>21}{'client CPU s':>22}{'peak RSS MiB':>22}{'requests':>22}  ok"
    print(header)
    for tool, runs in results.items():
        print(
            f"{tool:<10}{spread([r.seconds for r in runs]):>21}{spread([r.cpu for r in runs], '{:.2f}'):>22}"
            f"{spread([r.rss_mib for r in runs], '{:.0f}'):>22}"
            f"{spread([float(r.requests) for r in runs], '{:.0f}'):>22}  {sum(r.ok for r in runs)}/{len(runs)}"
        )
    for tool in ("kubectl", "kubectl-k"):
        if results.get(tool):
            runs = results[tool]
            print(
                f"{tool} apply --server-side alone: {extra(runs, 'apply_seconds')} s, "
                f"CPU {extra(runs, 'apply_cpu', '{:.2f}')} s"
            )
    if results.get("cli"):
        cli = results["cli"]
        print(
            f"cli write phase (plan + validate + apply, no render, no health waits): "
            f"{extra(cli, 'write_seconds', '{:.2f}')} s; render {extra(cli, 'render_seconds', '{:.2f}')} s"
        )
        for tool in ("kubectl", "kubectl-k"):
            if results.get(tool):
                pairs = zip(cli, results[tool], strict=False)
                ratios = [c.extra.get("write_seconds", 0.0) / k.extra["apply_seconds"] for c, k in pairs]
                print(f"  write phase ratio to {tool} apply (same round): {spread(ratios, '{:.2f}')}")
    if results.get("floor"):
        print(
            f"floor writes then kubectl wait (the controllers' part, untimed above): "
            f"{spread([r.seconds + r.extra.get('settle_seconds', 0.0) for r in results['floor']])} s"
        )
    if results.get("daemon"):
        daemon = [
            r.extra["rss_with_children_mib"] for r in results["daemon"] if "rss_with_children_mib" in r.extra
        ]
        print(
            "daemon peak RSS: own VmHWM above (start to Healthy); with kustomize children "
            f"{spread(daemon, '{:.0f}')} MiB; objects of earlier CLI rounds it also watched "
            f"(reconciler's label): {extra(results['daemon'], 'labelled_before', '{:.0f}')}"
        )
    for baseline in ("kubectl", "kubectl-k"):
        walls = {
            tool: [t.seconds / k.seconds for t, k in zip(results[tool], results[baseline], strict=False)]
            for tool in ("cli", "daemon")
            if results.get(tool) and results.get(baseline)
        }
        if walls:
            shown = ", ".join(f"{tool} {spread(values, '{:.2f}')}" for tool, values in walls.items())
            print(f"wall ratio to {baseline} apply + wait (same round): {shown}")
    print("\nrequests by verb (writes: audit log, this tool's user agent; dry-run: audit log;")
    print("reads: apiserver_request_total GET/LIST on the workload's kinds, all clients in the window)")
    for tool, runs in results.items():
        print(f"  {tool:<9} writes   {verbs([r.writes for r in runs])}")
        print(f"  {'':<9} dry-run  {verbs([r.dry_run for r in runs])}")
        print(f"  {'':<9} reads    {verbs([r.reads for r in runs])}")
        print(f"  {'':<9} per object {spread([r.requests / objects for r in runs], '{:.2f}')}")
    print("\nCLI re-syncs of the last CLI environment")
    for label, figures in resyncs.items():
        print(
            f"  {label:<18} {figures.seconds:6.2f} s  CPU {figures.cpu:5.2f} s  requests {figures.requests:5d}  "
            f"writes {dict(figures.writes) or 0}  dry-run {dict(figures.dry_run) or 0}  "
            f"reads {dict(figures.reads) or 0}  ok {figures.ok}"
        )


async def run(args: argparse.Namespace) -> None:
    tools = ensure_toolchain(log)
    namespaces = max(1, args.objects // 10)
    # kwok nodes take 110 pods each; every tool's Deployments stay until the cluster is removed
    pods = namespaces * len(args.tools) * args.rounds
    others = [c.name for c in list_clusters() if c.name != args.cluster and c.status().state != "stopped"]
    if others:
        log(f"other local clusters are running ({', '.join(others)}): they share these cores")
    cluster = Cluster(args.cluster)
    kubeconfig = cluster.up(log, nodes=max(3, pods // 100 + 2), toolchain=tools)
    try:
        with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
            root = Path(tmp)
            git("init", "-q", cwd=root)  # the CLI's repo root
            async with await KubeClient.from_kubeconfig(kubeconfig) as kube:
                kube.api.user_agent = "peers-bench/1"
                bench = Bench(
                    args, kubeconfig, tools.kustomize, Meter(kube, cluster.audit_log_path), kube, root
                )
                bench.setup_git()
                try:
                    results = await rounds(bench, args)
                    resyncs = await cli_resyncs(bench, args.rounds - 1) if "cli" in args.tools else {}
                finally:
                    bench.git_server.terminate()
                    bench.git_server.wait(10)
            report(results, resyncs, namespaces * 10)
            load = " ".join(f"{v:.2f}" for v in os.getloadavg())
            print(
                f"\nload average at the end: {load} ({os.cpu_count()} CPUs); other clusters at the start: "
                f"{', '.join(others) or 'none'}"
            )
    finally:
        if not args.keep:
            cluster.down(log)


async def rounds(bench: Bench, args: argparse.Namespace) -> dict[str, list[Figures]]:
    tools: tuple[str, ...] = tuple(args.tools)
    results: dict[str, list[Figures]] = {tool: [] for tool in tools}
    for number in range(args.rounds):
        order = tools[number % len(tools) :] + tools[: number % len(tools)]
        for tool in order:
            name = f"peers-{tool}-r{number}"
            objects = workload(name, bench.namespaces)
            log(f"round {number}: {tool} ({len(objects)} objects)")
            if tool == "cli":
                directory = bench.root / "cli" / name
                write_environment(directory, objects)
                figures = await bench.cli(name, directory)
            elif tool == "kubectl":
                figures = await bench.kubectl(name, objects)
            elif tool == "kubectl-k":
                figures = await bench.kubectl(name, objects, kustomize=True)
            elif tool == "daemon":
                figures = await bench.daemon(name, objects)
            else:
                figures = await bench.floor(objects)
            log(
                f"  {figures.seconds:.1f} s, CPU {figures.cpu:.2f} s, {figures.requests} requests, ok {figures.ok}"
            )
            results[tool].append(figures)
    return results


async def cli_resyncs(bench: Bench, number: int) -> dict[str, Figures]:
    name = f"peers-cli-r{number}"
    directory = bench.root / "cli" / name
    resyncs = {"no-op": await bench.cli(name, directory)}
    objects = workload(name, bench.namespaces)
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            obj["data"] = {"LOG_LEVEL": "debug"}
            break
    write_environment(directory, objects)
    resyncs["one-object change"] = await bench.cli(name, directory)
    return resyncs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--objects", type=int, default=1000, help="objects per tool and round (10 per namespace)"
    )
    parser.add_argument(
        "--tools",
        type=lambda text: [t for t in text.split(",") if t],
        default=list(TOOLS),
        help=f"comma-separated tools to run (default: all of {','.join(TOOLS)})",
    )
    parser.add_argument("--cluster", default="peers", help="name of the local cluster to start")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args()
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)} (choose from {', '.join(TOOLS)})")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
