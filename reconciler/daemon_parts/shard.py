"""This replica's share of the environments when sharding is on (``sharding.enabled``): its member
Lease, the assignment of every environment over the live members, and the permit (ownership plus the
environment's claim, with the write fence set) under which a sync, its status write or a drift
correction runs.

Every replica computes the same assignment (``reconciler.sharding.assign`` over all configured
environments, ``depends_on`` chains kept together) from the members it sees. When the members change,
environments this replica gained are synced at once and those it lost have their running sync
cancelled (between two API calls; its claim is released as the sync's permit closes). Ownership only
says who *should* work; the claim says who *may* write: two replicas that briefly disagree about the
members may both think they own an environment, but only one holds its claim, and every write request
checks it (``reconciler.kube.fencing``). A permit that cannot get the claim (the previous owner is still
finishing) is retried as soon as that claim is released, or once it could have expired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from reconciler.kube import fencing
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.settings import Settings
from reconciler.sharding import (
    ClaimLost,
    Claims,
    ClaimsConfig,
    ClaimUnavailable,
    Membership,
    MembershipConfig,
    assign,
    dependency_groups,
)
from reconciler.sync.correction import NotPermittedError
from reconciler.workqueue import WorkQueue

log = structlog.get_logger("reconciler.daemon")


class DeferredError(NotPermittedError):
    """Another replica holds the environment's claim now; try again in ``retry_after`` seconds (or when
    it is released, whichever comes first)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShardMetrics:
    """``reconciler_shard_*``: members seen, environments owned, ownership changes and claim events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.members = Gauge(
            "reconciler_shard_members", "Live replicas this replica sees.", registry=registry
        )
        self.environments = Gauge(
            "reconciler_shard_environments",
            "Environments assigned to this replica.",
            ["replica"],
            registry=registry,
        )
        self.handovers = Counter(
            "reconciler_shard_handovers",
            "Environments that moved to this replica (gained) or away from it (released) on a membership "
            "change, and claims lost while held (lost).",
            ["replica", "event"],
            registry=registry,
        )


class Shard:
    """Membership, assignment and permits of one replica (see the module docstring)."""

    def __init__(
        self, settings: Settings, client: KubeClient, queue: WorkQueue, registry: CollectorRegistry
    ) -> None:
        config = settings.sharding
        election = settings.leader_election
        self.identity = election.identity
        self.queue = queue
        self.names = [env.name for env in settings.environments]
        # a depends_on chain is synced by one replica (it waits on its dependencies' state), and so are
        # a promotion pipeline's source and target (its owner judges the source's health and soak)
        edges: dict[str, list[str]] = {env.name: list(env.depends_on) for env in settings.environments}
        for pipeline in settings.promotions.pipelines:
            edges.setdefault(pipeline.target, []).append(pipeline.source)
        self.groups = dependency_groups(edges)
        self.metrics = ShardMetrics(registry)
        self.membership = Membership(
            client,
            MembershipConfig(
                namespace=election.namespace,
                identity=self.identity,
                shard_group=config.group,
                lease_duration=config.lease_duration,
                renew_deadline=config.lease_duration - config.safety_margin,
                renew_interval=config.renew_interval,
            ),
            on_change=self._members_changed,
        )
        self.claims = Claims(
            client,
            ClaimsConfig(
                namespace=election.namespace,
                identity=self.identity,
                shard_group=config.group,
                lease_duration=config.lease_duration,
                renew_interval=config.renew_interval,
                safety_margin=config.safety_margin,
            ),
            on_released=self._released,
            on_lost=self._lost,
        )
        self.owners: dict[str, str] = {}  # environment -> replica, as this replica computes it
        self.ready = asyncio.Event()  # the first assignment is made (members listed)
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_assigned: Callable[[list[str]], None] = lambda _released: None
        self.on_lost: Callable[[str], None] = lambda _environment: None

    # -- ownership -------------------------------------------------------------------------------
    def owns(self, environment: str) -> bool:
        """True when this replica should sync ``environment`` (by its view of the members)."""
        return self.owners.get(environment) == self.identity

    def owner(self, environment: str) -> str:
        """The replica ``environment`` is assigned to ("" before the first assignment)."""
        return self.owners.get(environment, "")

    def owned(self) -> list[str]:
        """The environments this replica owns, sorted."""
        return sorted(name for name, owner in self.owners.items() if owner == self.identity)

    def _members_changed(self, members: tuple[str, ...]) -> None:
        before = set(self.owned())
        self.owners = assign(self.names, members, self.groups) if members else {}
        after = set(self.owned())
        gained, lost = sorted(after - before), sorted(before - after)
        self.metrics.members.set(len(members))
        self.metrics.environments.labels(self.identity).set(len(after))
        self.metrics.handovers.labels(self.identity, "gained").inc(len(gained) if self.ready.is_set() else 0)
        self.metrics.handovers.labels(self.identity, "released").inc(len(lost))
        if gained or lost or not self.ready.is_set():
            log.info(
                "shard assignment", members=list(members), owned=len(after), gained=gained, released=lost
            )
        for name in lost:  # stops between two API calls; its claim is released as its permit closes
            self.queue.cancel_key(f"env:{name}")
        self.ready.set()
        for name in gained:
            self.queue.add_now(f"env:{name}")
        self.on_assigned(lost)

    def _released(self, environment: str) -> None:
        """Another replica released a claim: if the environment is ours, take it over now."""
        if self.owns(environment):
            self.queue.add_now(f"env:{environment}")

    def _lost(self, environment: str) -> None:
        """A claim of ours was lost (not renewed in time, or taken): stop what runs under it."""
        self.metrics.handovers.labels(self.identity, "lost").inc()
        log.warning("claim lost: stopping the environment's work", environment=environment)
        self.on_lost(environment)
        self.queue.cancel_key(f"env:{environment}")
        if self.owns(environment):
            self.queue.add_after(f"env:{environment}", 1.0)

    # -- permits ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def permit(self, environment: str) -> AsyncIterator[object]:
        """Run the block as ``environment``'s owner holding its claim, every write fenced by it;
        ``NotPermittedError`` (``DeferredError`` when worth retrying soon) otherwise."""
        if not self.owns(environment):
            raise NotPermittedError(
                f"environment {environment} is assigned to {self.owner(environment) or '?'}"
            )
        lock = self._locks.setdefault(environment, asyncio.Lock())
        async with lock:
            try:
                fence = await self.claims.acquire(environment)
            except ClaimUnavailable as exc:
                raise DeferredError(str(exc), max(0.2, exc.retry_after)) from None
            try:
                with fencing.fenced(fence):
                    yield fence
                    fence.ensure()  # what the block did counts only if the claim held to its end
            except ClaimLost as exc:
                raise NotPermittedError(str(exc)) from None
            finally:
                await asyncio.shield(self.claims.release(environment))

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Join the members and keep the claims renewed, until cancelled; started again after a
        second when the API server refuses (at start, before the namespace could be made)."""
        while True:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.membership.run(), name="shard-membership")
                    group.create_task(self.claims.run(), name="shard-claims")
            except* KubeError as failed:
                log.warning("sharding loops failed; starting them again", error=str(failed.exceptions[0]))
            await asyncio.sleep(1.0)

    async def leave(self) -> None:
        """On shutdown, after the syncs stopped: release every claim, then the member Lease, so the
        others take the environments over at once."""
        await self.claims.release_all()
        await self.membership.release()
