"""The HTTP server's side of the daemon (``reconciler.server.app.Controller``): push webhooks (fetched at
once whatever the backoff; a follower passes them on to the leader through the Lease, and the leader
takes a follower's nudge as a webhook), readiness and the environments' statuses."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from reconciler.envstatus import from_object
from reconciler.kube.errors import KubeError
from reconciler.leader import LeaderElector
from reconciler.server.webhooks import Push
from reconciler.settings import Settings
from reconciler.sharding.announce import Announcements
from reconciler.workqueue import WorkQueue

from .clusters import Clusters
from .environment import EnvironmentState
from .fetching import FETCH, ZERO_SHA, Fetcher
from .shard import Shard
from .tasks import Tasks

log = structlog.get_logger("reconciler.daemon")


class Intake:
    """Turns webhooks and nudges into fetches, and answers the probes and the status API."""

    def __init__(
        self,
        settings: Settings,
        environments: dict[str, EnvironmentState],
        fetcher: Fetcher,
        queue: WorkQueue,
        leading: asyncio.Event,
        tasks: Tasks,
        clusters: Clusters,
    ) -> None:
        self.settings = settings
        self.environments = environments
        self.fetcher = fetcher
        self.head = fetcher.head
        self.queue = queue
        self.leading = leading
        self.tasks = tasks
        self.elector: LeaderElector | None = None  # set at startup when leader election is enabled
        self.clusters = clusters
        self.announcements: Announcements | None = None  # with sharding: set at startup
        self.shard: Shard | None = None
        self._nudged: set[str] = set()  # commits a follower passed on to the leader

    def push(self, push: Push) -> str:
        """A webhook arrived: fetch now, whatever the backoff (or, as a follower, ask the leader to)."""
        branch_ref = f"refs/heads/{self.settings.repository.branch}"
        if push.ref and push.ref != branch_ref:
            return f"ref {push.ref} is not the tracked branch {branch_ref}"
        # an all-zero commit is a deleted branch: fetch (and report it missing), wait for no commit
        after = "" if push.after in ZERO_SHA else push.after
        if self.leading.is_set():
            if after and after == self.head.revision:
                return f"revision {after[:12]} is already fetched"
            if after and after in self.fetcher.requested and not self.queue.backing_off(FETCH):
                return "accepted"  # the fetch for it is queued or running (a burst of one push)
            if after:
                self.fetcher.want(after)
            self.queue.add_now(FETCH)
            if self.announcements is not None:  # sharding: every replica fetches it too
                self.tasks.in_background(self._announce(after), "announce-revision")
        elif self.elector is not None:
            # what this follower fetched says nothing about the leader: pass every new commit on
            if after and after in self._nudged:
                return "accepted"
            self.tasks.in_background(self._nudge(after), "nudge-leader")
        else:
            self.queue.add_now(FETCH)
        return "accepted"

    async def _announce(self, sha: str) -> None:
        assert self.announcements is not None
        try:
            await self.announcements.announce(sha)
        except KubeError as exc:
            log.warning("could not announce the revision to the other replicas", error=str(exc))

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

    def nudged_by_follower(self, sha: str) -> None:
        """A follower passed a webhook on through the Lease: as good as one sent to us."""
        if sha and sha not in ZERO_SHA and sha not in ("unknown", self.head.revision):
            self.fetcher.want(sha)
        self.queue.add_now(FETCH)

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when Git was fetched at least once, is not stale, and the home cluster (the daemon's
        Lease, promotions and kubeconfig Secrets) answers; other clusters are ``degraded``."""
        reasons: list[str] = []
        stale_reason = self.head.stale_reason
        if not self.head.fetched_once:
            reasons.append("git: not fetched yet" + (f" ({stale_reason})" if stale_reason else ""))
        elif stale_reason:
            reasons.append(f"git: stale: {stale_reason}")
        home = self.settings.home_cluster
        if error := self.clusters.unreachable(home):
            reasons.append(f"cluster {home} (home): {error}")
        return not reasons, reasons

    def degraded(self) -> list[str]:
        """The clusters other than the home one that cannot be used now, with why."""
        home = self.settings.home_cluster
        return [line for line in self.clusters.degraded() if not line.startswith(f"cluster {home}: ")]

    async def environment_statuses(self) -> list[dict[str, Any]]:
        """Status of every environment; with sharding, an environment another replica syncs is told
        from its Environment object (what its owner last wrote), one listing per cluster."""
        stale = {
            "gitStale": bool(self.head.stale_reason),
            "gitError": self.head.stale_reason,
            "gitFailures": self.queue.backoff.failures.get(FETCH, 0),
        }
        shard = self.shard
        if shard is None:
            return [{**state.status(), **stale} for state in self.environments.values()]
        others = [state for state in self.environments.values() if not shard.owns(state.config.name)]
        written = await self._written_statuses({state.config.cluster for state in others})
        statuses = []
        for state in self.environments.values():
            name = state.config.name
            if shard.owns(name):
                statuses.append({**state.status(), **stale})
                continue
            base = {**state.status(), "owner": shard.owner(name), **stale}
            statuses.append({**base, **from_object(written.get((state.config.cluster, name)))})
        return statuses

    async def _written_statuses(self, clusters: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
        """The ``status`` of every Environment object on ``clusters`` (those that answer)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for cluster in sorted(clusters):
            objects = self.clusters.environment_objects.get(cluster)
            if objects is None or self.clusters.unreachable(cluster):
                continue
            try:
                for name, status in (await objects.statuses()).items():
                    found[(cluster, name)] = status
            except KubeError as exc:
                log.debug("could not read the Environment objects", cluster=cluster, error=str(exc))
        return found
