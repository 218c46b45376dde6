"""The long-running daemon: supervises the Git source, the work queue, the HTTP server and leader
election, and turns events (webhooks, polls, timers, drift) into syncs.

Flow: a push webhook (or the poll timer, or a follower's nudge through the Lease) queues ``fetch``; the
fetch moves the mirror to the branch head, checks the revision out into an immutable snapshot, and
queues ``env:<name>`` for every environment whose render inputs changed (a commit that only touches
``production/`` does not re-sync ``staging``) or that is not Ready yet. The queue deduplicates keys, so a
burst of webhooks gives one fetch and at most one sync per environment, and never runs two syncs of one
environment at once. Only the leader fetches and syncs. SIGTERM stops intake, lets the running stage
finish (or cancels it between API calls: the inventory is written in single requests, never half),
releases the Lease and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.leader import LeaderElector
from reconciler.plan.prune import PruneOptions
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.render.restrictions import LoadPolicy
from reconciler.server.app import STATE, build_app
from reconciler.server.webhooks import Push
from reconciler.settings import EnvironmentConfig, Settings
from reconciler.source import GitError, GitSource
from reconciler.sync import Engine, SyncOptions, SyncResult
from reconciler.workqueue import Backoff, WorkQueue

log = structlog.get_logger(__name__)
FETCH = "fetch"


@dataclass
class EnvironmentState:
    """What the daemon knows about one environment."""

    config: EnvironmentConfig
    revision: str = ""
    input_key: str = ""
    result: SyncResult | None = None
    last_sync: float = 0.0
    last_success: float = 0.0
    syncs: int = 0

    def status(self) -> dict[str, Any]:
        """JSON status for the API."""
        result = self.result
        base: dict[str, Any] = {
            "name": self.config.name,
            "path": self.config.path,
            "cluster": self.config.cluster,
            "revision": self.revision,
            "syncs": self.syncs,
            "lastSyncTime": self.last_sync or None,
            "lastSuccessTime": self.last_success or None,
        }
        if result is None:
            return {
                **base,
                "sync": "Unknown",
                "health": "Unknown",
                "condition": "Reconciling",
                "reason": "Pending",
            }
        summary = result.summary()
        return {
            **base,
            "sync": summary["sync"],
            "health": summary["health"],
            "condition": summary["condition"],
            "reason": summary["reason"],
            "message": summary["message"],
            "changes": summary["changes"],
            "lastError": result.error,
        }


@dataclass
class Metrics:
    """The daemon's own Prometheus metrics (a first set; observability grows them)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.fetches = Counter(
            "reconciler_git_fetches_total", "Git fetches by result.", ["result"], registry=r
        )
        self.fetch_seconds = Histogram(
            "reconciler_git_fetch_duration_seconds", "Git fetch duration.", registry=r
        )
        self.last_fetch = Gauge(
            "reconciler_git_last_success_timestamp_seconds", "Last successful fetch.", registry=r
        )
        self.syncs = Counter(
            "reconciler_syncs_total",
            "Syncs by environment and result.",
            ["environment", "result"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "reconciler_sync_duration_seconds",
            "Sync duration.",
            ["environment"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.leader = Gauge("reconciler_leader", "1 while this replica is the leader.", registry=r)

    def count_requests_of(self, clients: dict[str, KubeClient]) -> None:
        """Export the request counters of these clients (the daemon's, filled as clusters connect)."""
        self.registry.register(_KubeRequests(clients))


class _KubeRequests(Collector):
    """Kubernetes API requests made by this process, by cluster, verb and status code."""

    def __init__(self, clients: dict[str, KubeClient]) -> None:
        self.clients = clients

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "reconciler_kube_requests",
            "Kubernetes API requests by cluster, verb and code.",
            labels=["cluster", "verb", "code"],
        )
        for cluster, client in self.clients.items():
            for (verb, code), count in sorted(client.request_counts().items()):
                family.add_metric([cluster, verb, str(code)], count)
        yield family


class Daemon:
    """One reconciler process."""

    def __init__(self, settings: Settings, *, kustomize: Path) -> None:
        self.settings = settings
        self.kustomize = kustomize
        self.source = GitSource(settings.repository, settings.cache_dir)
        self.renderer = Renderer()
        self.metrics = Metrics()
        self.clients: dict[str, KubeClient] = {}
        self.metrics.count_requests_of(self.clients)
        self.caches: dict[str, LiveCache] = {}
        self.engines: dict[str, Engine] = {}
        self.environments = {e.name: EnvironmentState(e) for e in settings.environments}
        self.queue = WorkQueue(self._handle, workers=settings.workers, backoff=Backoff(base=1.0, cap=60.0))
        self.revision = ""
        self.snapshot: Path | None = None
        self.fetched_once = False
        self.stale_reason = ""
        self.last_fetch_success = 0.0
        self.cluster_errors: dict[str, str] = {}
        self.elector: LeaderElector | None = None
        self.leading = asyncio.Event()
        self._requested: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.app = build_app(self, settings.webhooks, self.metrics.registry)

    # -- Controller protocol (for the HTTP server) --------------------------------------------------
    def push(self, push: Push) -> str:
        """A webhook arrived: fetch now (or ask the leader to)."""
        branch_ref = f"refs/heads/{self.settings.repository.branch}"
        if push.ref and push.ref != branch_ref:
            return f"ref {push.ref} is not the tracked branch {branch_ref}"
        if push.after and push.after == self.revision:
            return f"revision {push.after[:12]} is already fetched"
        if push.after:
            if push.after in self._requested:
                return "accepted"
            self._requested.add(push.after)
        if self.leading.is_set():
            self.queue.add(FETCH)
        elif self.elector is not None:
            task = asyncio.get_running_loop().create_task(self._nudge(push.after))
            self._tasks.append(task)
        return "accepted"

    async def _nudge(self, sha: str) -> None:
        assert self.elector is not None
        try:
            await self.elector.nudge(sha)
        except KubeError as exc:
            log.warning("could not pass the webhook on to the leader", error=str(exc))

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when Git was fetched at least once, is not stale, and every cluster answers."""
        reasons: list[str] = []
        if not self.fetched_once:
            reasons.append("git: not fetched yet" + (f" ({self.stale_reason})" if self.stale_reason else ""))
        elif self.stale_reason:
            reasons.append(f"git: stale: {self.stale_reason}")
        reasons.extend(f"cluster {name}: {error}" for name, error in self.cluster_errors.items())
        return not reasons, reasons

    def environment_statuses(self) -> list[dict[str, Any]]:
        """Status of every environment."""
        stale = {
            "gitStale": bool(self.stale_reason),
            "gitError": self.stale_reason,
            "gitFailures": self.queue.backoff.failures.get(FETCH, 0),
        }
        return [{**state.status(), **stale} for state in self.environments.values()]

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to clusters, start the server, the election, the poller and the workers."""
        for cluster in self.settings.clusters:
            if cluster.in_cluster:
                client = KubeClient.in_cluster()
            else:
                client = await KubeClient.from_kubeconfig(cluster.kubeconfig, cluster.context)
            self.clients[cluster.name] = client
            cache = LiveCache(client)
            self.caches[cluster.name] = cache
            self.engines[cluster.name] = Engine(client, cache=cache, renderer=self.renderer)
            self.engines[cluster.name].inventory.namespace = self.settings.inventory_namespace
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.settings.listen_host, self.settings.listen_port, shutdown_timeout=2
        )
        await site.start()
        log.info("listening", address=self.settings.listen)
        self.queue.start()
        self._spawn(self._probe_clusters(), "probe-clusters")
        if self.settings.leader_election.enabled:
            client = self.clients[self.settings.leader_election.cluster]
            self.elector = LeaderElector(
                client,
                self.settings.leader_election,
                on_nudge=lambda sha: self.queue.add(FETCH),
                on_change=self._leadership_changed,
            )
            self._spawn(self.elector.run(), "leader-election")
        else:
            self._leadership_changed(True)
        self._spawn(self._poll(), "git-poll")
        self._spawn(self._resync(), "resync")
        # followers fetch too (for readiness and status), but never sync
        self.queue.add(FETCH)

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            self.leading.set()
            self.queue.add(FETCH)
            for name in self.environments:
                self.queue.add(f"env:{name}")
        else:
            self.leading.clear()

    async def _poll(self) -> None:
        config = self.settings.repository
        while True:
            jitter = 1 + random.uniform(-config.poll_jitter, config.poll_jitter)  # noqa: S311
            await asyncio.sleep(config.poll_interval * jitter)
            self.queue.add(FETCH)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            if self.leading.is_set():
                for name in self.environments:
                    self.queue.add(f"env:{name}")

    async def _probe_clusters(self) -> None:
        while True:
            for name, client in self.clients.items():
                try:
                    await client.request("GET", "/version", subject=f"cluster {name}")
                    self.cluster_errors.pop(name, None)
                except KubeError as exc:
                    self.cluster_errors[name] = str(exc)
            await asyncio.sleep(5)

    async def stop(self, timeout: float = 7.0) -> None:
        """Stop intake, drain or cancel work, release the Lease, close everything."""
        started = time.monotonic()
        self.app[STATE].accepting = False
        for task in self._tasks:
            task.cancel()
        await self.queue.close(timeout=max(0.5, timeout - 2))
        if self.elector is not None:
            await self.elector.release()
        for engine in self.engines.values():
            await engine.close()
        for cache in self.caches.values():
            await cache.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for client in self.clients.values():
            await client.close()
        log.info("stopped", seconds=round(time.monotonic() - started, 2))

    async def run_forever(self) -> None:
        """Start, wait for SIGTERM/SIGINT, stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        await self._stopping.wait()
        log.info("signal received; shutting down")
        try:
            await asyncio.wait_for(self.stop(), timeout=8.0)
        except TimeoutError:
            log.error("shutdown did not finish within 8 s; exiting anyway")

    # -- work --------------------------------------------------------------------------------------
    async def _handle(self, key: str) -> None:
        if key == FETCH:
            await self._fetch()
        elif key.startswith("env:"):
            await self._sync(key[4:])

    def _render_options(self, env: EnvironmentConfig) -> RenderOptions:
        return RenderOptions(
            kustomize=self.kustomize,
            policy=LoadPolicy(
                allow_remote_bases=env.allow_remote_bases,
                allow_helm=env.allow_helm,
                allow_plugins=env.allow_plugins,
            ),
        )

    async def _fetch(self) -> None:
        started = time.monotonic()
        try:
            sha = await self.source.fetch()
            snapshot = await self.source.snapshot(sha)
        except GitError as exc:
            self.metrics.fetches.labels(result="error").inc()
            self.stale_reason = str(exc)
            log.warning(
                "git fetch failed; keeping the last good revision", error=str(exc), revision=self.revision
            )
            raise
        self.metrics.fetches.labels(result="success").inc()
        self.metrics.fetch_seconds.observe(time.monotonic() - started)
        self.metrics.last_fetch.set_to_current_time()
        self.fetched_once = True
        self.stale_reason = ""
        self.last_fetch_success = time.time()
        # pushes announced by webhooks are satisfied once their commit is in the mirror
        missing = {
            want for want in self._requested if not await asyncio.to_thread(self.source.has_commit, want)
        }
        self._requested = missing
        if missing:
            self.queue.add_after(FETCH, 0.2)
        changed_revision = sha != self.revision
        self.revision, self.snapshot = sha, snapshot
        if changed_revision:
            log.info("fetched", revision=sha[:12], seconds=round(time.monotonic() - started, 3))
        if not self.leading.is_set():
            return
        keys = await asyncio.to_thread(self._input_keys, snapshot, sha)
        for name, state in self.environments.items():
            key = keys[name]
            ready = state.result is not None and state.result.ok
            if key != state.input_key or not ready:
                self.queue.add(f"env:{name}")
            else:
                state.revision = sha

    def _input_keys(self, snapshot: Path, sha: str) -> dict[str, str]:
        """Every environment's render-input key at a snapshot (blocking: one thread hop for all)."""
        keys: dict[str, str] = {}
        for name, state in self.environments.items():
            try:
                keys[name] = self.renderer.inputs_key(
                    snapshot, snapshot / state.config.path, self._render_options(state.config)
                )
            except RenderError:
                keys[name] = f"error@{sha}"
        return keys

    async def _sync(self, name: str) -> None:
        state = self.environments.get(name)
        if state is None or self.snapshot is None or not self.leading.is_set():
            return
        env = state.config
        snapshot, revision = self.snapshot, self.revision
        engine = self.engines[env.cluster]
        options = SyncOptions(
            environment=name,
            revision=revision,
            prune=PruneOptions(
                enabled=env.prune,
                max_share=env.max_prune_share,
                prune_protected_kinds=env.prune_protected_kinds,
            ),
            health_timeout=env.health_timeout,
            wait_for_all=False,
        )
        structlog.contextvars.bind_contextvars(reconcile_id=f"{name}-{int(time.time() * 1000) % 10**8}")
        log.info("sync started", environment=name, revision=revision[:12])
        started = time.monotonic()
        result = await engine.sync_directory(
            snapshot, snapshot / env.path, self._render_options(env), options
        )
        elapsed = time.monotonic() - started
        state.result, state.revision, state.last_sync = result, revision, time.time()
        state.syncs += 1
        state.input_key = result.input_hash or f"error@{revision}"
        self.metrics.syncs.labels(environment=name, result=result.reason or result.condition).inc()
        self.metrics.sync_seconds.labels(environment=name).observe(elapsed)
        if result.ok:
            state.last_success = time.time()
        elif result.reason in ("ClusterUnreachable",):
            raise RuntimeError(result.message)  # retried with backoff by the queue
        elif result.condition == "Reconciling":
            self.queue.add_after(f"env:{name}", 5.0)


async def run(settings: Settings, kustomize: Path) -> None:
    """Run a daemon until SIGTERM; SIGUSR1 dumps every thread's stack to stderr (for debugging)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    daemon = Daemon(settings, kustomize=kustomize)
    with contextlib.suppress(asyncio.CancelledError):
        await daemon.run_forever()
    # Threads of blocking calls (git, file hashing) must not hold the exit hostage.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
