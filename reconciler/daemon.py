"""The long-running daemon: supervises the Git source, the work queue, the HTTP server and leader
election, and turns events (webhooks, polls, timers, drift) into syncs. ``Daemon`` is the facade over
``reconciler.daemon_parts`` (one module per responsibility: see its docstring); it owns the wiring
between them, leadership changes, the promotions host protocol and the process lifecycle.

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
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from reconciler.daemon_parts import wiring
from reconciler.daemon_parts.clusters import Clusters
from reconciler.daemon_parts.environment import EnvironmentState, render_options
from reconciler.daemon_parts.fetching import FETCH, Fetcher, Wanted
from reconciler.daemon_parts.intake import Intake
from reconciler.daemon_parts.reporting import STATUS, Reporter
from reconciler.daemon_parts.shard import Shard
from reconciler.daemon_parts.syncing import Syncer
from reconciler.daemon_parts.tasks import Tasks, dump_tasks
from reconciler.events import EventRecorder
from reconciler.leader import LeaderElector
from reconciler.metrics import Metrics
from reconciler.objects import ChangeSetEntry
from reconciler.promotion import api as promotion_api
from reconciler.promotion.controller import EnvView, PromotionController
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.store import PromotionStore
from reconciler.render import Renderer
from reconciler.server.app import STATE, build_app
from reconciler.server.webhooks import Push
from reconciler.settings import Settings
from reconciler.sharding.announce import Announcements
from reconciler.source import GitSource
from reconciler.source.gate import CommitGate
from reconciler.workqueue import Backoff, WorkQueue

__all__ = ["Daemon", "EnvironmentState", "Wanted", "dump_tasks", "run"]
log = structlog.get_logger(__name__)


class Daemon:
    """One reconciler process: the facade over its parts (``reconciler.daemon_parts``)."""

    def __init__(self, settings: Settings, *, kustomize: Path) -> None:
        self.settings = settings
        self.kustomize = kustomize
        self.source = GitSource(settings.repository, settings.cache_dir)
        self.gate = CommitGate(settings.repository.verify, self.source.mirror, settings.cache_dir / "gnupg")
        self.renderer = Renderer()
        self.metrics = Metrics()
        self.clusters = Clusters(settings, self.renderer, self.metrics, self._on_drift)
        self.clusters.on_down, self.clusters.on_up = self._cluster_down, self._cluster_up
        self.clusters.on_replaced = self._cluster_replaced
        self.clients = self.clusters.clients
        self.metrics.count_requests_of(self.clients)
        self.caches = self.clusters.caches
        self.engines = self.clusters.engines
        self.environments = {e.name: EnvironmentState(e) for e in settings.environments}
        for name in self.environments:
            self.metrics.environment_known(name)
        self.environment_objects = self.clusters.environment_objects  # by cluster
        self.events = EventRecorder(
            instance=settings.leader_election.identity or "reconciler",
            on_outcome=lambda reason, outcome: self.metrics.events.labels(
                reason=reason, outcome=outcome
            ).inc(),
        )
        self.queue = WorkQueue(
            self._handle,
            workers=settings.workers,
            backoff=Backoff(base=1.0, cap=60.0),
            lane_of=self._lane_of,
            lane_workers=lambda cluster: settings.cluster(cluster).max_concurrent_syncs or settings.workers,
        )
        self.leading = asyncio.Event()
        self.tasks = Tasks()
        self._wire_parts()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.app = build_app(self, settings.webhooks, self.metrics.registry, self.metrics.webhook_requests)
        self.promotions: PromotionController | None = None
        self.shard: Shard | None = None  # with sharding.enabled (set at start)
        promotion_api.add_routes(self.app, lambda: self.promotions)

    def _wire_parts(self) -> None:
        """The reporter, fetcher, syncer and intake, each given what it works with."""
        self.reporter = Reporter(
            self.settings,
            self.environments,
            self.environment_objects,
            self.events,
            self.metrics,
            self.queue,
            self.leading,
            self.tasks,
            self.clusters.unreachable,
        )
        self.fetcher = Fetcher(
            self.source,
            self.gate,
            self.renderer,
            self.kustomize,
            self.environments,
            self.metrics,
            self.queue,
            self.leading,
            self.reporter,
        )
        self.head = self.fetcher.head
        self.syncer = Syncer(
            self.settings,
            self.kustomize,
            self.environments,
            self.engines,
            self.head,
            self.queue,
            self.leading,
            self.reporter,
            lambda: self.promotions,
            self.clusters.unreachable,
        )
        self.intake = Intake(
            self.settings,
            self.environments,
            self.fetcher,
            self.queue,
            self.leading,
            self.tasks,
            self.clusters,
        )
        self.cluster_errors = self.clusters.errors

    # -- what the fetch last saw (kept by the fetcher) -----------------------------------------------
    @property
    def revision(self) -> str:
        """The verified branch head last fetched."""
        return self.head.revision

    @revision.setter
    def revision(self, value: str) -> None:
        self.head.revision = value

    @property
    def snapshot(self) -> Path | None:
        return self.head.snapshot

    @snapshot.setter
    def snapshot(self, value: Path | None) -> None:
        self.head.snapshot = value

    @property
    def fetched_once(self) -> bool:
        return self.head.fetched_once

    @fetched_once.setter
    def fetched_once(self, value: bool) -> None:
        self.head.fetched_once = value

    @property
    def stale_reason(self) -> str:
        return self.head.stale_reason

    @stale_reason.setter
    def stale_reason(self, value: str) -> None:
        self.head.stale_reason = value

    @property
    def last_fetch_success(self) -> float:
        return self.head.last_fetch_success

    @property
    def elector(self) -> LeaderElector | None:
        return self.intake.elector

    @elector.setter
    def elector(self, value: LeaderElector | None) -> None:
        self.intake.elector = value

    @property
    def dead_tasks(self) -> list[str]:
        return self.tasks.dead

    @property
    def _tasks(self) -> list[asyncio.Task[Any]]:
        return self.tasks.loops

    def _spawn(self, coroutine: Any, name: str) -> None:
        self.tasks.spawn(coroutine, name)

    # -- Controller protocol (for the HTTP server) --------------------------------------------------
    def push(self, push: Push) -> str:
        """A webhook arrived: fetch now, whatever the backoff (or, as a follower, ask the leader to)."""
        return self.intake.push(push)

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when Git was fetched at least once, is not stale, and the home cluster answers."""
        return self.intake.readiness()

    def degraded(self) -> list[str]:
        """The other clusters that cannot be used now (the replica stays ready)."""
        return self.intake.degraded()

    def liveness(self) -> list[str]:
        """The internal loops that died (``/healthz`` fails while this is not empty)."""
        return list(self.tasks.dead)

    async def environment_statuses(self) -> list[dict[str, Any]]:
        """Status of every environment (with sharding, those of other replicas from their objects)."""
        return await self.intake.environment_statuses()

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
            render_options(self.kustomize, state.config),
        )

    def head_revision(self) -> str:
        """The branch head last fetched."""
        return self.head.revision

    def _start_promotions(self) -> None:
        config = self.settings.promotions
        if not config.pipelines:
            return
        store = PromotionStore(self.clients[self.settings.home_cluster], self.settings.inventory_namespace)
        writer = GitWriter(self.source, config.author_name, config.author_email, config.signing_key)
        self.promotions = PromotionController(config, store, writer, self, self.metrics.registry)
        self.tasks.spawn(self.promotions.run(self.leading), "promotions")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to clusters, start the server, the election, the poller and the workers."""
        await self.clusters.connect()
        await self.clusters.install_crds()
        self.events.start()
        self._runner = await wiring.serve(self.app, self.settings)
        self.queue.start()
        for cluster in self.settings.clusters:
            if cluster.kubeconfig_secret is not None:
                self.tasks.spawn(self.clusters.follow_secret(cluster), f"kubeconfig-secret-{cluster.name}")
            self.tasks.spawn(self.clusters.probe(cluster), f"probe-cluster-{cluster.name}")
        if self.settings.sharding.enabled:
            self._start_shard()
        elif self.settings.leader_election.enabled:
            client = self.clients[self.settings.home_cluster]
            self.elector = LeaderElector(
                client,
                self.settings.leader_election,
                on_nudge=self.intake.nudged_by_follower,
                on_change=self._leadership_changed,
            )
            self.tasks.spawn(self.elector.run(), "leader-election")
        else:
            self._leadership_changed(True)
        self._start_promotions()
        if self.shard is not None and self.promotions is not None:
            self.promotions.owns = self.shard.owns
        self.tasks.spawn(wiring.poll(self.settings, self.queue), "git-poll")
        self.tasks.spawn(wiring.resync(self.settings, self.environments, self.queue, self.leading), "resync")
        # followers fetch too (for readiness and status), but never sync
        self.queue.add(FETCH)

    def _start_shard(self) -> None:
        """Sharding: every replica works, on the environments assigned to it (``daemon_parts.shard``);
        pushes are announced to every replica through a shared Lease."""
        client = self.clients[self.settings.home_cluster]
        shard = self.shard = Shard(self.settings, client, self.queue, self.metrics.registry)
        shard.on_assigned = self._assigned
        shard.on_lost = self._forget
        self.syncer.owns, self.syncer.permit = shard.owns, shard.permit
        self.reporter.owns = shard.owns
        self.clusters.set_permit(shard.permit)
        self.intake.shard = shard
        self.intake.announcements = Announcements(
            client,
            self.settings.leader_election.namespace,
            self.settings.sharding.group,
            self.intake.nudged_by_follower,
        )
        self.tasks.spawn(shard.run(), "shard")
        self.tasks.spawn(self.intake.announcements.run(), "revision-announcements")
        self._leadership_changed(True)  # every replica works on what it owns
        self.metrics.leader.set(0)  # no replica holds the leader Lease

    def _assigned(self, released: list[str]) -> None:
        """After a membership change: who syncs what; the metrics of what moved away go back to Unknown
        (only the owner exports an environment's state)."""
        assert self.shard is not None
        for name, state in self.environments.items():
            state.owner = self.shard.owner(name)
        for name in released:
            self.metrics.environment_known(name)
            self._forget(name)

    def _forget(self, environment: str) -> None:
        """Another replica syncs ``environment`` now: its desired state here is old news."""
        for engine in self.engines.values():
            engine.corrector.forget(environment)

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

    async def stop(self, timeout: float = 7.0) -> None:
        """Stop intake, drain or cancel work, release the Lease, close everything."""
        started = time.monotonic()
        self.app[STATE].accepting = False
        self.tasks.cancel_all()
        # with sharding the other replicas take the environments over at once: stop between two API
        # calls instead of draining, then release the claims and the member Lease (handover < 3 s)
        drain = 0.5 if self.shard is not None else max(0.5, timeout - 2)
        await self.queue.close(timeout=drain)
        if self.shard is not None:
            await self.shard.leave()
        if self.elector is not None:
            await self.elector.release()
        await self.events.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.clusters.close()
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

    def _on_drift(self, environment: str, entry: ChangeSetEntry) -> None:
        self.reporter.on_drift(environment, entry)

    # -- clusters ----------------------------------------------------------------------------------
    def _lane_of(self, key: str) -> str:
        """A key's lane of workers: the cluster of the environment it syncs or reports (``""``: the
        default lane, for fetches)."""
        for prefix in ("env:", STATUS):
            if key.startswith(prefix):
                state = self.environments.get(key[len(prefix) :])
                return state.config.cluster if state is not None else ""
        return ""

    def _cluster_keys(self, cluster: str) -> list[str]:
        return [f"env:{env.name}" for env in self.clusters.environments_of(cluster)]

    def _cluster_down(self, cluster: str) -> None:
        """The cluster stopped answering: stop its running syncs (they would only wait for timeouts)
        and sync its environments again, which marks them Stalled (ClusterUnreachable) at once."""
        if not self.leading.is_set():
            return
        for key in self._cluster_keys(cluster):
            self.queue.cancel_key(key)
            self.queue.add_now(key)

    def _cluster_up(self, cluster: str) -> None:
        """The cluster answers again: sync its environments now (whatever their backoff), without
        waiting for a push."""
        if self.leading.is_set():
            for key in self._cluster_keys(cluster):
                self.queue.add_now(key)

    def _cluster_replaced(self, cluster: str) -> None:
        """The cluster's connection is about to be replaced: stop the syncs using the old one."""
        for key in self._cluster_keys(cluster):
            self.queue.cancel_key(key)

    # -- work --------------------------------------------------------------------------------------
    async def _handle(self, key: str) -> None:
        if key == FETCH:
            await self.fetcher.fetch()
        elif key.startswith("env:"):
            await self.syncer.sync(key[4:])
        elif key.startswith(STATUS) and self.leading.is_set():
            await self.reporter.retry_status(key[len(STATUS) :])


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
