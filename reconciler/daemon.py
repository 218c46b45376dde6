"""The long-running daemon: supervises the Git source, the work queue, the HTTP server and leader
election, and turns events (webhooks, polls, timers, drift) into syncs.

Flow: a push webhook (or the poll timer, or a follower's nudge through the Lease) queues ``fetch``; the
fetch moves the mirror to the branch head, checks the revision out into an immutable snapshot, and
queues ``env:<name>`` for every environment whose render inputs changed (a commit that only touches
``production/`` does not re-sync ``staging``) or that is not Ready yet. The queue deduplicates keys, so a
burst of webhooks gives one fetch and at most one sync per environment, and never runs two syncs of one
environment at once; a fetch that changes an environment's inputs while a sync of older inputs runs
(typically waiting for their health) cancels that sync and runs the new one at once. Only the leader
syncs; a replica that loses leadership cancels its running syncs.
SIGTERM stops intake, lets the running stage finish (or cancels it between API calls: the inventory is
written in single requests, never half), releases the Lease and exits.

A webhook someone waits for is never held back by the Git backoff: it fetches at once (``add_now``),
and while Git fails, a failed fetch is retried every ``WANTED_RETRY`` s for the commits webhooks announced
(for ``WANTED_PATIENCE`` s), so they are fetched within a second of Git being reachable again; polls
keep to the backoff. A commit a webhook announced is fetched again (0.2 s doubling to 2 s) until it is
in the mirror, but given up after ``WANTED_ATTEMPTS`` successful fetches without it: a force push may
have overtaken it; an all-zero ``after`` (a deleted branch) is no commit to wait for.
A refused write of an Environment object is retried with backoff (key ``status:<name>``) until it lands;
the syncs that failed while a cluster was unreachable are retried as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from reconciler import crds
from reconciler.envstatus import EnvironmentObjects, changeset_summary, next_conditions, now_rfc3339
from reconciler.events import EventNote, EventRecorder, drift_event, sync_events
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.leader import LeaderElector
from reconciler.metrics import Metrics
from reconciler.objects import ChangeSetEntry
from reconciler.plan.prune import PruneOptions
from reconciler.promotion import api as promotion_api
from reconciler.promotion.controller import EnvView, PromotionController
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.store import PromotionStore
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.render.restrictions import LoadPolicy
from reconciler.server import listener
from reconciler.server.app import STATE, build_app
from reconciler.server.webhooks import Push
from reconciler.settings import EnvironmentConfig, Settings
from reconciler.source import GitError, GitSource
from reconciler.source.gate import UNVERIFIED, CommitGate
from reconciler.sync import Engine, SyncOptions, SyncResult
from reconciler.tenancy import AccessPolicy
from reconciler.workqueue import Backoff, WorkQueue

log = structlog.get_logger(__name__)
FETCH = "fetch"
STATUS = "status:"
# how many fetches look for a commit a webhook announced before it is given up (0.2 s doubling to 2 s
# between them: about 9 s, long enough for a Git server whose replicas lag behind its webhooks)
WANTED_ATTEMPTS = 8
# while Git fails, a commit a webhook announced is looked for this often, for this long after the webhook
WANTED_RETRY = 0.5
WANTED_PATIENCE = 120.0
ZERO_SHA = frozenset({"0" * 40, "0" * 64})
# Failures worth retrying with the same inputs (the API server may recover; another environment may
# release an object or bring a namespace or CRD); render and manifest errors, and a blocked prune,
# wait for a new revision (or an operator) instead.
RETRIED_FAILURES = frozenset(
    {
        "ClusterUnreachable",
        "ApiError",
        "ValidationFailed",
        "ApplyFailed",
        "HealthCheckFailed",
        "OwnershipConflict",
    }
)


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
    applied_revision: str = ""  # the last revision applied completely (Synced), for status and metrics
    conditions: list[dict[str, Any]] = field(default_factory=list)  # kstatus: Ready/Reconciling/Stalled
    # since when the environment has been Ready at ``input_key`` (0: not Ready): promotions' soak time
    healthy_since: float = 0.0
    # the input key at the last fetched revision (which may not be synced yet) and the directories
    # whose contents it depends on (None: not known)
    latest_key: str = ""
    input_dirs: frozenset[str] | None = None
    # why a sync is held back by ``depends_on`` ("" when it is not)
    waiting_for: str = ""
    unverified: str = ""  # why the fetched head is refused (repository.verify); "" when it is not
    # the last sync that created, configured or deleted something: revision, time, summary (None: none
    # known); ``change_loaded`` once the Environment object was asked for one an earlier leader wrote
    last_change: dict[str, str] | None = None
    change_loaded: bool = False
    # the input key the running sync applies ("" when none runs): a fetch with other inputs supersedes it
    syncing_key: str = ""

    def __post_init__(self) -> None:
        if not self.conditions:
            self.conditions = next_conditions(
                [], "Reconciling", "Pending", "waiting for the first sync", now_rfc3339()
            )

    def message(self) -> str:
        """What the environment's condition says: the last sync's message, except when the environment
        is Ready and that sync changed nothing or ran at an older revision with the same inputs: then
        ``revision R: N objects unchanged since S``, S being the revision of the last change (never a
        no-op sync's "9 unchanged" hiding the change, nor a new revision beside an old one's message)."""
        result = self.result
        if result is None:
            return ""
        if not (result.ok and result.synced) or (
            result.changeset.changed and result.revision == self.revision
        ):
            return result.message
        since = self.last_change["revision"] if self.last_change else ""
        objects = len(result.changeset.entries)
        if not since:
            return f"revision {self.revision}: {objects} objects unchanged"
        return f"revision {self.revision}: {objects} objects unchanged since {since}"

    def status(self) -> dict[str, Any]:
        """JSON status for the API (also the source of the Environment object's status)."""
        result = self.result
        base: dict[str, Any] = {
            "name": self.config.name,
            "path": self.config.path,
            "cluster": self.config.cluster,
            "revision": self.revision,
            "appliedRevision": self.applied_revision,
            "conditions": self.conditions,
            "syncs": self.syncs,
            "lastSyncTime": self.last_sync or None,
            "lastSuccessTime": self.last_success or None,
            **({"lastAppliedChange": self.last_change} if self.last_change else {}),
        }
        # held back by depends_on: that is what the environment is doing now, whatever it did last
        held = (
            {"condition": "Reconciling", "reason": "DependencyNotReady", "message": self.waiting_for}
            if self.waiting_for
            else {}
        )
        if self.unverified:  # the head is refused: the last verified revision stays, nothing is synced
            held = {"condition": "Stalled", "reason": UNVERIFIED, "message": self.unverified}
        if result is None:
            return {
                **base,
                "sync": "Unknown",
                "health": "Unknown",
                "condition": "Reconciling",
                "reason": "Pending",
                **held,
            }
        summary = result.summary()
        return {
            **base,
            "sync": summary["sync"],
            "health": summary["health"],
            "condition": summary["condition"],
            "reason": summary["reason"],
            "message": self.message(),
            **held,
            "changes": summary["changes"],
            "lastChangeSet": changeset_summary(result.changeset),
            "unhealthy": summary["unhealthy"],
            "pruneBlocked": summary["pruneBlocked"],
            "inventoryObjects": result.inventory_size,
            "durations": summary["durations"],
            "lastError": result.error,
        }


@dataclass
class Wanted:
    """A commit a webhook announced, until the mirror holds it."""

    since: float  # monotonic time of the first webhook naming it
    misses: int = 0  # successful fetches that did not bring it


class Daemon:
    """One reconciler process."""

    def __init__(self, settings: Settings, *, kustomize: Path) -> None:
        self.settings = settings
        self.kustomize = kustomize
        self.source = GitSource(settings.repository, settings.cache_dir)
        self.gate = CommitGate(settings.repository.verify, self.source.mirror, settings.cache_dir / "gnupg")
        self._refused_head = ""  # the last head refused by the gate (counted once)
        self.renderer = Renderer()
        self.metrics = Metrics()
        self.clients: dict[str, KubeClient] = {}
        self.metrics.count_requests_of(self.clients)
        self.caches: dict[str, LiveCache] = {}
        self.engines: dict[str, Engine] = {}
        self.environments = {e.name: EnvironmentState(e) for e in settings.environments}
        for name in self.environments:
            self.metrics.environment_known(name)
        self.environment_objects: dict[str, EnvironmentObjects] = {}  # by cluster
        self.events = EventRecorder(
            instance=settings.leader_election.identity or "reconciler",
            on_outcome=lambda reason, outcome: self.metrics.events.labels(
                reason=reason, outcome=outcome
            ).inc(),
        )
        self.queue = WorkQueue(self._handle, workers=settings.workers, backoff=Backoff(base=1.0, cap=60.0))
        self.revision = ""
        self.snapshot: Path | None = None
        self.fetched_once = False
        self.stale_reason = ""
        self.last_fetch_success = 0.0
        self.cluster_errors: dict[str, str] = {}
        self.elector: LeaderElector | None = None
        self.leading = asyncio.Event()
        self._requested: dict[str, Wanted] = {}  # commits webhooks announced, until fetched
        self._nudged: set[str] = set()  # commits a follower passed on to the leader
        self._tasks: list[asyncio.Task[Any]] = []
        self.dead_tasks: list[str] = []
        self._background: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.app = build_app(self, settings.webhooks, self.metrics.registry, self.metrics.webhook_requests)
        self.promotions: PromotionController | None = None
        promotion_api.add_routes(self.app, lambda: self.promotions)

    # -- Controller protocol (for the HTTP server) --------------------------------------------------
    def push(self, push: Push) -> str:
        """A webhook arrived: fetch now, whatever the backoff (or, as a follower, ask the leader to)."""
        branch_ref = f"refs/heads/{self.settings.repository.branch}"
        if push.ref and push.ref != branch_ref:
            return f"ref {push.ref} is not the tracked branch {branch_ref}"
        # an all-zero commit is a deleted branch: fetch (and report it missing), wait for no commit
        after = "" if push.after in ZERO_SHA else push.after
        if self.leading.is_set():
            if after and after == self.revision:
                return f"revision {after[:12]} is already fetched"
            if after and after in self._requested and not self.queue.backing_off(FETCH):
                return "accepted"  # the fetch for it is queued or running (a burst of one push)
            if after:
                self._requested.setdefault(after, Wanted(time.monotonic()))
            self.queue.add_now(FETCH)
        elif self.elector is not None:
            # what this follower fetched says nothing about the leader: pass every new commit on
            if after and after in self._nudged:
                return "accepted"
            task = asyncio.get_running_loop().create_task(self._nudge(after), name="nudge-leader")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self.queue.add_now(FETCH)
        return "accepted"

    async def _nudge(self, sha: str) -> None:
        assert self.elector is not None
        try:
            await self.elector.nudge(sha)
        except KubeError as exc:
            log.warning("could not pass the webhook on to the leader", error=str(exc))
            return
        if sha:  # passed on: a redelivery need not be (a failed one is, when it comes again)
            if len(self._nudged) >= 256:
                self._nudged.clear()
            self._nudged.add(sha)

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

    # -- Host protocol (for promotions) ---------------------------------------------------------------
    def environment_view(self, name: str) -> EnvView | None:
        """What promotions need to know about one environment."""
        state = self.environments.get(name)
        if state is None:
            return None
        result = state.result
        return EnvView(
            name=name,
            path=state.config.path,
            revision=state.revision,
            input_key=state.input_key if result is not None else "",
            ok=result is not None and result.ok,
            condition=result.condition if result is not None else "Reconciling",
            reason=result.reason if result is not None else "Pending",
            message=result.message if result is not None else "",
            healthy_since=state.healthy_since,
        )

    def request_fetch(self) -> None:
        """Fetch the repository now."""
        self.queue.add(FETCH)

    async def input_key_at(self, environment: str, revision: str) -> str:
        """The render-input key of ``environment`` at ``revision`` (its snapshot is checked out)."""
        state = self.environments[environment]
        snapshot = await self.source.snapshot(revision)
        return await asyncio.to_thread(
            self.renderer.inputs_key,
            snapshot,
            snapshot / state.config.path,
            self._render_options(state.config),
        )

    def head_revision(self) -> str:
        """The branch head last fetched."""
        return self.revision

    def _start_promotions(self) -> None:
        config = self.settings.promotions
        if not config.pipelines:
            return
        cluster = self.settings.leader_election.cluster or self.settings.clusters[0].name
        store = PromotionStore(self.clients[cluster], self.settings.inventory_namespace)
        writer = GitWriter(self.source, config.author_name, config.author_email, config.signing_key)
        self.promotions = PromotionController(config, store, writer, self, self.metrics.registry)
        self._spawn(self.promotions.run(self.leading), "promotions")

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
            engine = Engine(client, cache=cache, renderer=self.renderer)
            engine.inventory.namespace = self.settings.inventory_namespace
            engine.on_drift = self._on_drift
            self.engines[cluster.name] = engine
            # an environment with a service_account syncs through an engine whose every request is made
            # as that identity; inventories, watches and the Environment objects stay the daemon's own
            for env in self.settings.environments:
                if env.cluster == cluster.name and env.service_account:
                    tenant = Engine(
                        client.impersonating(env.impersonated_user),
                        inventory=engine.inventory,
                        cache=cache,
                        renderer=self.renderer,
                    )
                    tenant.on_drift = self._on_drift
                    self.engines.setdefault(_engine_key(env), tenant)
            self.environment_objects[cluster.name] = EnvironmentObjects(
                client, self.settings.inventory_namespace
            )
        if self.settings.install_crds:
            await self._install_crds()
        self.events.start()
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        # TCPSite with a deadline and size cap on request headers (slowloris)
        site = listener.Site(
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
                on_nudge=self._nudged_by_follower,
                on_change=self._leadership_changed,
            )
            self._spawn(self.elector.run(), "leader-election")
        else:
            self._leadership_changed(True)
        self._start_promotions()
        self._spawn(self._poll(), "git-poll")
        self._spawn(self._resync(), "resync")
        # followers fetch too (for readiness and status), but never sync
        self.queue.add(FETCH)

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A loop that ends with an error is logged at once and fails liveness (it never recovers)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}"
        log.error("internal loop died", task=task.get_name(), error=reason, exc_info=error)
        self.dead_tasks.append(f"{task.get_name()}: {reason}")

    def liveness(self) -> list[str]:
        """The internal loops that died (``/healthz`` fails while this is not empty)."""
        return list(self.dead_tasks)

    def _nudged_by_follower(self, sha: str) -> None:
        """A follower passed a webhook on through the Lease: as good as one sent to us."""
        if sha and sha not in ZERO_SHA and sha not in ("unknown", self.revision):
            self._requested.setdefault(sha, Wanted(time.monotonic()))
        self.queue.add_now(FETCH)

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            self.leading.set()
            # another leader may have written the Environment objects since we last did
            for objects in self.environment_objects.values():
                objects.forget()
            for state in self.environments.values():
                state.last_change, state.change_loaded = None, False
            self.queue.add_now(FETCH)
            for name in self.environments:
                self.queue.add(f"env:{name}")
        else:
            self.leading.clear()
            # only the leader writes: stop the syncs and status writes under way
            cancelled = self.queue.cancel("env:") + self.queue.cancel(STATUS)
            if cancelled:
                log.warning("leadership lost: cancelled the running syncs", cancelled=cancelled)
            for name in self.environments:  # only the leader reports environments' state
                self.metrics.environment_known(name)

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
        """Every 5 s (every 0.5 s while one does not answer): is each cluster reachable? When one answers
        again, the syncs that failed meanwhile run at once instead of waiting out their backoff."""
        while True:
            for name, client in self.clients.items():
                try:
                    await client.request("GET", "/version", subject=f"cluster {name}")
                except KubeError as exc:
                    self.cluster_errors[name] = str(exc)
                    continue
                if self.cluster_errors.pop(name, None) is not None and self.leading.is_set():
                    retried = [
                        state.config.name
                        for state in self.environments.values()
                        if state.config.cluster == name and self.queue.backing_off(f"env:{state.config.name}")
                    ]
                    for env in retried:
                        self.queue.add_now(f"env:{env}")
                    log.info("cluster reachable again", cluster=name, retried=retried)
            await asyncio.sleep(0.5 if self.cluster_errors else 5)

    async def stop(self, timeout: float = 7.0) -> None:
        """Stop intake, drain or cancel work, release the Lease, close everything."""
        started = time.monotonic()
        self.app[STATE].accepting = False
        for task in [*self._tasks, *self._background]:
            task.cancel()
        await self.queue.close(timeout=max(0.5, timeout - 2))
        if self.elector is not None:
            await self.elector.release()
        for engine in self.engines.values():
            await engine.close()
        await self.events.close()
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
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
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
        elif key.startswith(STATUS) and self.leading.is_set():
            name = key[len(STATUS) :]
            if not await self._write_status(name):
                objects = self.environment_objects[self.environments[name].config.cluster]
                raise RuntimeError(f"the Environment object {name} was not written: {objects.failing(name)}")

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
            self.metrics.fetch_failed()
            self.stale_reason = str(exc)
            log.warning(
                "git fetch failed; keeping the last good revision", error=str(exc), revision=self.revision
            )
            now = time.monotonic()
            if any(now - wanted.since < WANTED_PATIENCE for wanted in self._requested.values()):
                # webhooks wait for a commit: look again soon (an earlier timer wins over the backoff's)
                self.queue.add_after(FETCH, WANTED_RETRY)
            raise
        self.metrics.fetched(time.monotonic() - started)
        self.fetched_once = True
        self.stale_reason = ""
        self.last_fetch_success = time.time()
        await self._look_for_wanted(sha)
        if not await self._verified(sha):
            return
        changed_revision = sha != self.revision
        previous_revision = self.revision
        self.revision, self.snapshot = sha, snapshot
        if changed_revision:
            log.info("fetched", revision=sha[:12], seconds=round(time.monotonic() - started, 3))
        if not self.leading.is_set():
            return
        keys = await asyncio.to_thread(self._input_keys, snapshot, sha, previous_revision)
        moved: list[str] = []
        for name, state in self.environments.items():
            key = keys[name]
            ready = state.result is not None and state.result.ok
            if key != state.input_key or not ready:
                self.queue.add(f"env:{name}")
                # a sync of older inputs (maybe waiting for their health) must not hold the new ones back:
                # cancel it (between API calls; the inventory is never half written) and run again at
                # once, as Flux's CancelHealthCheckOnNewRevision does
                if state.syncing_key not in ("", key) and self.queue.cancel(f"env:{name}"):
                    log.info("sync superseded by a new revision", environment=name, revision=sha[:12])
            else:
                state.revision = sha
                if state.result is not None and state.result.synced and state.applied_revision != sha:
                    # the same render inputs at a new commit: applied as it is, and said so
                    state.applied_revision = sha
                    self.metrics.applied_revision(name, sha)
                    state.conditions = next_conditions(
                        state.conditions,
                        state.result.condition,
                        state.result.reason,
                        state.message(),
                        now_rfc3339(),
                    )
                    moved.append(name)
        # one status write per environment the commit did not change: off the fetch's critical path, so
        # the next push is fetched at once however many environments there are
        self._report_later(moved)

    async def _verified(self, sha: str) -> bool:
        """True when ``sha`` may be synced (``repository.verify``). A refused head keeps the last verified
        revision: every environment is Stalled with reason UnverifiedCommit (an Event and the metric once
        per commit), and nothing is rendered, applied or pruned until a verified commit arrives."""
        verdict = await self.gate.check(sha)
        self.metrics.head_verified.set(1 if verdict.ok else 0)
        message = "" if verdict.ok else f"{verdict.reason}; keeping revision {self.revision[:12] or '(none)'}"
        if verdict.ok:
            self._refused_head = ""
        elif sha != self._refused_head:
            self._refused_head = sha
            self.metrics.unverified_commits.inc()
            log.warning(
                "fetched head is not verified; nothing is synced", commit=sha[:12], reason=verdict.reason
            )
        for name, state in self.environments.items():
            if state.unverified == message:
                continue
            state.unverified = message
            if not self.leading.is_set():
                continue
            if verdict.ok:
                await self._report(name, [])
                continue
            state.conditions = next_conditions(
                state.conditions, "Stalled", UNVERIFIED, message, now_rfc3339()
            )
            await self._report(name, [EventNote("Warning", UNVERIFIED, message)])
        return verdict.ok

    async def _look_for_wanted(self, head: str) -> None:
        """Forget the commits webhooks announced that the mirror now holds; fetch again soon for the
        others, but give each up after ``WANTED_ATTEMPTS`` fetches (a force push overtook it, or it was
        never on the branch): it must not keep the daemon fetching for ever."""
        for sha, wanted in list(self._requested.items()):
            if sha == head or await asyncio.to_thread(self.source.has_commit, sha):
                self._requested.pop(sha, None)
                continue
            wanted.misses += 1
            if wanted.misses >= WANTED_ATTEMPTS:
                self._requested.pop(sha, None)
                log.warning(
                    "a commit a webhook announced never arrived; given up (overtaken by a force push, or "
                    "not on the branch)",
                    commit=sha[:12],
                    fetches=wanted.misses,
                    head=head[:12],
                )
        if self._requested:
            fewest = min(wanted.misses for wanted in self._requested.values())
            self.queue.add_after(FETCH, min(2.0, 0.2 * 2 ** (fewest - 1)))

    def _report_later(self, names: list[str]) -> None:
        """Report these environments in a background task (at most 16 writes at a time)."""
        if not names:
            return

        async def report_all() -> None:
            # the syncs this fetch queued go first: their writes are what a push is waiting for
            await self.queue.wait_idle("env:", timeout=30)
            limit = asyncio.Semaphore(16)

            async def one(name: str) -> None:
                async with limit:
                    await self._report(name, [])

            results = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
            for name, outcome in zip(names, results, strict=True):
                if isinstance(outcome, Exception):
                    log.warning("could not report the environment", environment=name, error=str(outcome))

        task = asyncio.create_task(report_all(), name="report-revisions")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _input_keys(self, snapshot: Path, sha: str, previous: str = "") -> dict[str, str]:
        """Every environment's render-input key at a snapshot (blocking: one thread hop for all).

        Only environments whose input directories the commits since ``previous`` touched are hashed
        again (with 100 environments, a commit to one of them hashes one); the others keep their key.
        """
        changed = self.source.changed_paths(previous, sha) if previous and previous != sha else None
        touched = {path.rsplit("/", 1)[0] if "/" in path else "." for path in changed or ()}
        keys: dict[str, str] = {}
        for name, state in self.environments.items():
            if changed is not None and state.input_dirs is not None and not touched & state.input_dirs:
                keys[name] = state.latest_key
                continue
            try:
                keys[name], state.input_dirs = self.renderer.inputs_of(
                    snapshot, snapshot / state.config.path, self._render_options(state.config)
                )
            except RenderError:
                keys[name] = f"error@{sha}"
                state.input_dirs = None
            state.latest_key = keys[name]
        return keys

    async def _sync(self, name: str) -> None:
        state = self.environments.get(name)
        if state is None or self.snapshot is None or not self.leading.is_set():
            return
        env = state.config
        unmet = self._unmet_dependencies(state)
        if unmet:
            # synced again when a dependency finishes (see below), not retried on a timer
            message = "waiting for " + "; ".join(unmet)
            if state.waiting_for != message:
                state.waiting_for = message
                state.conditions = next_conditions(
                    state.conditions, "Reconciling", "DependencyNotReady", message, now_rfc3339()
                )
                log.info("sync held back", environment=name, reason=message)
                await self._report(name, [])
            return
        state.waiting_for = ""
        snapshot, revision = self.snapshot, self.revision
        engine = self.engines[_engine_key(env)]
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
            policy=self._access_policy(env),
        )
        # every log line of this reconcile carries the environment, the revision and a reconcile id
        context = {"environment": name, "revision": revision, "reconcile_id": f"{name}-{os.urandom(4).hex()}"}
        with structlog.contextvars.bound_contextvars(**context):
            log.info("sync started")
            started = time.monotonic()
            state.syncing_key = state.latest_key or "?"
            try:
                result = await engine.sync_directory(
                    snapshot, snapshot / env.path, self._render_options(env), options
                )
            finally:
                state.syncing_key = ""
            elapsed = time.monotonic() - started
        previous_key = state.input_key
        if result.changeset.changed:
            state.last_change = {
                "revision": revision,
                "time": now_rfc3339(),
                "summary": result.changeset.summary(),
            }
            state.change_loaded = True
        elif not state.change_loaded:
            state.last_change = await self._previous_change(state)
        state.result, state.revision, state.last_sync = result, revision, time.time()
        state.syncs += 1
        state.input_key = result.input_hash or f"error@{revision}"
        if result.ok:
            state.last_success = time.time()
            if not state.healthy_since or previous_key != state.input_key:
                state.healthy_since = time.time()
        else:
            state.healthy_since = 0.0
        with structlog.contextvars.bound_contextvars(**context):
            await self._after_sync(state, result, elapsed)
        if self.promotions is not None:
            self.promotions.wake()
        for other in self.environments.values():
            if other.waiting_for and name in other.config.depends_on:
                self.queue.add(f"env:{other.config.name}")
        if result.reason in RETRIED_FAILURES:
            # retried with backoff by the queue (1 s doubling to 60 s): what the API server refused may
            # depend on another environment (a namespace, a CRD) that is still syncing
            raise RuntimeError(f"{name}: {result.reason}: {result.message}")
        if result.condition == "Reconciling":
            self.queue.add_after(f"env:{name}", 5.0)

    def _access_policy(self, env: EnvironmentConfig) -> AccessPolicy:
        """What ``env`` may change: its configured namespaces and cluster-scoped kinds; never the
        daemon's own namespaces (inventories, Lease, configuration, Secrets)."""
        return AccessPolicy(
            namespaces=env.namespaces,
            cluster_scoped=env.cluster_scoped,
            reserved_namespaces=frozenset(
                {self.settings.inventory_namespace, self.settings.leader_election.namespace}
            ),
        )

    def _unmet_dependencies(self, state: EnvironmentState) -> list[str]:
        """The ``depends_on`` environments not yet Ready at their latest inputs, each with why."""
        unmet: list[str] = []
        for dependency in state.config.depends_on:
            other = self.environments[dependency]
            result = other.result
            if result is None:
                unmet.append(f"{dependency} (not synced yet)")
            elif not result.ok:
                unmet.append(f"{dependency} ({result.condition}: {result.reason})")
            elif other.latest_key and other.input_key != other.latest_key:
                unmet.append(f"{dependency} (syncing its new inputs)")
        return unmet

    # -- reporting: metrics, Environment objects, Events -------------------------------------------
    async def _after_sync(self, state: EnvironmentState, result: SyncResult, elapsed: float) -> None:
        """Metrics, conditions, the Environment object and Events of one finished sync."""
        name = state.config.name
        previous = next((c["type"] for c in state.conditions if c.get("status") == "True"), "")
        self.metrics.synced(result, elapsed)
        if result.synced and result.revision:
            state.applied_revision = result.revision
            self.metrics.applied_revision(name, result.revision)
        state.conditions = next_conditions(
            state.conditions, result.condition, result.reason, state.message(), now_rfc3339()
        )
        await self._report(name, sync_events(result, previous))

    async def _previous_change(self, state: EnvironmentState) -> dict[str, str] | None:
        """The last change an earlier leader (or this daemon before a restart) recorded on the object."""
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None:
            return None
        try:
            change = await objects.previous_change(state.config.name)
        except KubeError as exc:
            log.warning("could not read the Environment objects", error=str(exc))
            return None
        state.change_loaded = True
        if change is None:
            return None
        return {key: str(change.get(key) or "") for key in ("revision", "time", "summary")}

    async def _report(self, name: str, notes: list[EventNote]) -> None:
        """Write the environment's object (when its status changed) and record ``notes`` about it; a
        refused write is retried with backoff (``status:<name>``) until it lands."""
        state = self.environments[name]
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None:
            return
        if not await self._write_status(name):
            self.queue.add(STATUS + name)
        for note in notes:
            self.events.record(objects.client, objects.involved(name), note)

    async def _write_status(self, name: str) -> bool:
        """Write the environment's object as it is now; False when the API server refused."""
        state = self.environments[name]
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None:
            return True
        spec = {
            "path": state.config.path,
            "cluster": state.config.cluster,
            "repository": self.settings.repository.url,
            "branch": self.settings.repository.branch,
            "prune": state.config.prune,
        }
        return await objects.report(name, spec, state.status())

    def _on_drift(self, environment: str, entry: ChangeSetEntry) -> None:
        """The engine corrected (or refused to correct) drift: count it and say so."""
        self.metrics.drift(environment, entry)
        state = self.environments.get(environment)
        objects = self.environment_objects.get(state.config.cluster) if state is not None else None
        if objects is not None and self.leading.is_set():
            self.events.record(objects.client, objects.involved(environment), drift_event(entry))

    async def _install_crds(self) -> None:
        """Apply reconciler's CRDs to every cluster (``install_crds``); a refusal is logged, not fatal."""
        for name, client in self.clients.items():
            try:
                installed = await crds.ensure(client)
                log.info("CRDs installed", cluster=name, crds=installed)
            except KubeError as exc:
                log.error(
                    "could not install reconciler's CRDs; install deploy/base/crds as an administrator "
                    "and set install_crds: false",
                    cluster=name,
                    error=str(exc),
                )


def _engine_key(env: EnvironmentConfig) -> str:
    """The engine that syncs ``env``: its cluster's, or its cluster's as its service account."""
    return f"{env.cluster}|{env.service_account}" if env.service_account else env.cluster


def dump_tasks() -> None:
    """Write every asyncio task's name and stack to stderr (SIGUSR2: where is the daemon waiting?)."""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        print(f"--- task {task.get_name()}", file=out)
        task.print_stack(limit=30, file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()


async def run(settings: Settings, kustomize: Path) -> None:
    """Run a daemon until SIGTERM; SIGUSR1 dumps every thread's stack and SIGUSR2 every asyncio task's
    stack to stderr (for debugging)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    daemon = Daemon(settings, kustomize=kustomize)
    with contextlib.suppress(asyncio.CancelledError):
        await daemon.run_forever()
    # Threads of blocking calls (git, file hashing) must not hold the exit hostage.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
