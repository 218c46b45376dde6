"""Fencing: a per-environment claim that at most one replica holds, and the proof a writer checks.

A claim is a Lease ``reconciler-env-<environment>`` (``leases.dns_name``: a hash-suffixed name when the
environment's name would not fit) in the daemon's namespace, labelled ``reconciler.dev/claim=true`` and
with the shard group. Every write to it is conditional on the resourceVersion read or last written, so
of two replicas racing for it exactly one wins (the other gets 409 Conflict, or AlreadyExists on a
create). Another replica may take a claim only when its holder emptied it (``release()``) or when it
has *seen* it unrenewed for the Lease's full duration, by its own clock (``leases.Sighting``).

The holder, in turn, counts the claim as held only until ``start of its last successful write +
lease_duration - safety_margin``: the write reached the API server after it started, and a successor's
clock starts when it sees that write, later still, so the holder stops before anyone may take over,
whatever the clocks of the machines say. ``safety_margin`` must cover one guarded API call (a write
checked just before the deadline lands after it) and the drift between the machines' clock rates.

Each acquisition starts a new *term*. ``Fence`` is the proof of one term: its ``ensure()`` raises
``ClaimLost`` from the moment the claim cannot be proven held, and keeps raising even if the claim is
acquired again later (that is another term), so a sync that started under one term never writes under
another. Call ``ensure()`` before every write to the environment's cluster.

``Claims`` is one replica's set of claims: ``acquire``/``release`` (or ``hold`` for a block), a loop that
renews every held claim every ``renew_interval``, and a watch of the group's claims so that releases
are noticed at once (``on_released``) and expiries are judged from the last renewal anyone saw, not from
the moment this replica first looked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import AlreadyExistsError, ConflictError, KubeError, NotFoundError
from reconciler.objects import Body
from reconciler.sharding import leases
from reconciler.sharding.leases import DEFAULT_GROUP, GROUP_LABEL, INSTANCE_ANNOTATION, Sighting

log = structlog.get_logger(__name__)

CLAIM_LABEL = "reconciler.dev/claim"
ENVIRONMENT_ANNOTATION = "reconciler.dev/environment"
CLAIM_PREFIX = "reconciler-env-"
_RETRY_DELAY = 0.5  # a failed renewal is tried again this soon (until the claim runs out)


@dataclass(frozen=True)
class ClaimsConfig:
    """Where the claims live and how they are timed: a holder renews every ``renew_interval`` and
    counts a claim held for ``lease_duration - safety_margin`` after a renewal started."""

    namespace: str
    identity: str
    shard_group: str = DEFAULT_GROUP
    lease_duration: float = 10.0
    renew_interval: float = 3.0
    safety_margin: float = 2.0
    name_prefix: str = CLAIM_PREFIX
    watch: bool = True  # watch the group's claims (see the module docstring)
    watch_timeout: int = 60

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("claims need an identity (the pod name)")
        if not 0 < self.safety_margin < self.lease_duration:
            raise ValueError(f"safety_margin must be in (0, lease_duration), got {self.safety_margin}")
        if not 0 < self.renew_interval < self.hold_for:
            raise ValueError(
                f"renew_interval must be in (0, lease_duration - safety_margin = {self.hold_for}), "
                f"got {self.renew_interval}"
            )

    @property
    def hold_for(self) -> float:
        """Seconds a claim counts as held after a renewal started."""
        return self.lease_duration - self.safety_margin

    @property
    def selector(self) -> str:
        """Label selector of the group's claims."""
        return f"{CLAIM_LABEL}=true,{GROUP_LABEL}={leases.label_value(self.shard_group)}"

    def lease_name(self, environment: str) -> str:
        """Name of ``environment``'s claim Lease."""
        return leases.dns_name(self.name_prefix, environment)


class ClaimLost(Exception):
    """The claim on an environment can no longer be proven held: write nothing more to it."""

    def __init__(self, environment: str, reason: str) -> None:
        self.environment = environment
        self.reason = reason
        super().__init__(f"claim on environment {environment} lost: {reason}")


class ClaimUnavailable(Exception):
    """Another replica holds the claim (or won the race for it); ``retry_after`` is how long, by what
    this replica has seen, until it could expire (0: try again at once, for example after a lost race)."""

    def __init__(self, environment: str, holder: str, retry_after: float) -> None:
        self.environment = environment
        self.holder = holder
        self.retry_after = retry_after
        super().__init__(
            f"environment {environment} is claimed by {holder or 'another replica'} "
            f"(free in {retry_after:.1f} s at the earliest)"
        )


class Claim:
    """One environment's claim as this replica knows it: held or not, by whom, until when."""

    def __init__(
        self,
        client: KubeClient,
        config: ClaimsConfig,
        environment: str,
        *,
        instance: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.environment = environment
        self.name = config.lease_name(environment)
        self.instance = instance
        self.term = 0  # incremented by every acquisition
        self.next_renewal = 0.0
        self._clock = clock
        self._valid_until = 0.0
        self._lost_reason = "never acquired"
        self._lease: Body | None = None  # the Lease as last read, written or watched
        self._sighting: Sighting | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        """REST path of the claim's Lease."""
        return leases.lease_path(self.config.namespace, self.name)

    # -- the local view ----------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """True while this replica can prove it holds the claim (before its local deadline)."""
        return self._clock() < self._valid_until

    @property
    def remaining(self) -> float:
        """Seconds the claim still counts as held (0 when not held)."""
        return max(0.0, self._valid_until - self._clock())

    @property
    def holder(self) -> str:
        """Identity of the holder as last seen ("" when free or never read)."""
        if self.held:
            return self.config.identity
        return self._sighting.holder if self._sighting else ""

    @property
    def retry_after(self) -> float:
        """Seconds until another holder's claim expires by what this replica has seen (0 when free,
        expired, unknown or ours)."""
        if self.held or self._sighting is None:
            return 0.0
        return max(0.0, self._sighting.expires_at - self._clock()) if self._sighting.holder else 0.0

    def ensure(self) -> None:
        """Raise ``ClaimLost`` unless the claim is held now (whatever the term)."""
        if not self.held:
            raise ClaimLost(self.environment, self._loss())

    def fence(self) -> Fence:
        """The proof of the current term (its ``ensure()`` raises once this term ends)."""
        return Fence(self, self.term)

    def _loss(self) -> str:
        return self._lost_reason or "not renewed in time (no renewal confirmed before the deadline)"

    def _lose(self, reason: str) -> None:
        if self.held:
            log.warning("claim lost", environment=self.environment, reason=reason)
        self._valid_until = 0.0
        self._lost_reason = reason

    # -- observations ------------------------------------------------------------------------------
    def observe(self, lease: Body | None) -> None:
        """Take note of the Lease as read or watched (None: it does not exist). While we hold the claim,
        only our own conditional writes decide, since a watch event may be older than our last write."""
        if self.held:
            return
        self._lease = lease
        if lease is None:
            self._sighting = None
            return
        self._sighting = leases.sight(self._sighting, lease, self._clock(), self.config.lease_duration)

    def _mine(self, lease: Body) -> bool:
        return leases.holder_of(lease) == self.config.identity and leases.instance_of(lease) == self.instance

    def _foreign_group(self, lease: Body) -> bool:
        labels = (lease.get("metadata") or {}).get("labels") or {}
        return labels.get(GROUP_LABEL) != leases.label_value(self.config.shard_group)

    # -- writes ------------------------------------------------------------------------------------
    async def acquire(self) -> bool:
        """Take the claim when it is free, expired or already ours; True when held afterwards. A claim
        already held is not written (the renewal loop keeps it)."""
        async with self._lock:
            if self.held:
                return True
            started = self._clock()
            lease = await self._read()
            self.observe(lease)
            if lease is None:
                return await self._create(started)
            if self._foreign_group(lease):
                log.error(
                    "a claim Lease of another shard group has this environment's name; set a name prefix",
                    environment=self.environment,
                    lease=self.name,
                )
                return False
            sighting = self._sighting
            if not self._mine(lease) and sighting is not None and not sighting.expired(self._clock()):
                return False
            return await self._take(lease, started)

    async def _read(self) -> Body | None:
        try:
            return await self.client.request("GET", self.path, subject=f"Lease/{self.name}")
        except NotFoundError:
            return None

    def _spec(self, previous: dict[str, object], taking: bool) -> dict[str, object]:
        now = leases.micro_time()
        spec = {
            **previous,
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": leases.whole_seconds(self.config.lease_duration),
            "renewTime": now,
        }
        if taking:
            spec["acquireTime"] = now
            transitions = previous.get("leaseTransitions")
            spec["leaseTransitions"] = (transitions if isinstance(transitions, int) else 0) + 1
        return spec

    async def _create(self, started: float) -> bool:
        labels = {CLAIM_LABEL: "true", GROUP_LABEL: leases.label_value(self.config.shard_group)}
        annotations = {INSTANCE_ANNOTATION: self.instance, ENVIRONMENT_ANNOTATION: self.environment}
        body = leases.lease_body(
            self.config.namespace,
            self.name,
            labels=labels,
            annotations=annotations,
            spec={**self._spec({}, taking=True), "leaseTransitions": 0},
        )
        try:
            created = await self.client.request(
                "POST", leases.collection_path(self.config.namespace), body=body, subject=f"Lease/{self.name}"
            )
        except (AlreadyExistsError, ConflictError):
            self.observe(await self._read())  # another replica created it first
            return False
        self._granted(created, started)
        return True

    async def _take(self, lease: Body, started: float) -> bool:
        body = copy.deepcopy(lease)
        metadata = body.setdefault("metadata", {})
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            INSTANCE_ANNOTATION: self.instance,
            ENVIRONMENT_ANNOTATION: self.environment,
        }
        body["spec"] = self._spec(dict(body.get("spec") or {}), taking=not self._mine(lease))
        try:
            taken = await self.client.request("PUT", self.path, body=body, subject=f"Lease/{self.name}")
        except ConflictError:
            self.observe(await self._read())  # someone else won the race
            return False
        self._granted(taken, started)
        return True

    def _granted(self, lease: Body, started: float) -> None:
        self.term += 1
        self._lease = lease
        self._sighting = None
        self._lost_reason = ""
        self._valid_until = started + self.config.hold_for
        self.next_renewal = started + self.config.renew_interval
        log.debug("claim acquired", environment=self.environment, term=self.term)

    async def renew(self) -> bool:
        """Renew a held claim once; False when it was lost (not held any more, taken, deleted). Transient
        failures raise ``KubeError`` and leave the claim held until its deadline."""
        async with self._lock:
            if not self.held or self._lease is None:
                return False
            started = self._clock()
            self.next_renewal = started + _RETRY_DELAY
            lease = self._lease
            for _ in range(2):
                body = copy.deepcopy(lease)
                body["spec"] = self._spec(dict(body.get("spec") or {}), taking=False)
                try:
                    renewed = await self.client.request(
                        "PUT", self.path, body=body, subject=f"Lease/{self.name}"
                    )
                except NotFoundError:
                    self._lose("its Lease was deleted")
                    return False
                except ConflictError:
                    # changed since our last write: a retried write of ours that had landed, or another
                    # holder; only a fresh read can tell
                    fresh = await self._read()
                    if fresh is None or not self._mine(fresh):
                        self._lose(f"taken by {leases.holder_of(fresh or {}) or 'nobody (released)'}")
                        self.observe(fresh)
                        return False
                    lease = fresh
                    continue
                self._lease = renewed
                if self.held:  # a renewal answered after the deadline does not revive the term
                    self._valid_until = started + self.config.hold_for
                self.next_renewal = started + self.config.renew_interval
                return self.held
            return self.held

    async def release(self) -> bool:
        """End the term now and empty the Lease's holder so the next owner may take it at once; True
        when the API server confirmed. A claim taken by another meanwhile is left alone."""
        async with self._lock:
            self._valid_until = 0.0
            self._lost_reason = "released"
            lease = self._lease
            for _ in range(2):
                if lease is None or not self._mine(lease):
                    return False
                body = copy.deepcopy(lease)
                spec = {**(body.get("spec") or {}), "holderIdentity": "", "renewTime": leases.micro_time()}
                body["spec"] = spec
                try:
                    released = await self.client.request(
                        "PUT", self.path, body=body, subject=f"Lease/{self.name}"
                    )
                except NotFoundError:
                    self._lease = None
                    return False
                except ConflictError:  # our last write's answer was lost, or another holder took it
                    lease = self._lease = await self._read()
                    continue
                self._lease = released
                self._sighting = leases.sight(None, released, self._clock(), self.config.lease_duration)
                return True
            return False


@dataclass(frozen=True)
class Fence:
    """The proof that one term of a claim is still held: check it before every write."""

    claim: Claim
    term: int

    @property
    def environment(self) -> str:
        """The environment this fence guards."""
        return self.claim.environment

    @property
    def held(self) -> bool:
        """True while the term this fence was issued for is still held."""
        return self.claim.term == self.term and self.claim.held

    @property
    def remaining(self) -> float:
        """Seconds this term still counts as held (0 once it ended)."""
        return self.claim.remaining if self.held else 0.0

    def ensure(self) -> None:
        """Raise ``ClaimLost`` unless this term is still held."""
        if self.claim.term != self.term:
            raise ClaimLost(self.environment, "the claim was lost and acquired again since (a new term)")
        self.claim.ensure()


class Claims:
    """One replica's claims: acquire, renew (``run``), release; ``on_released(environment)`` when the
    watch sees another replica's claim released, ``on_lost(environment)`` when one of ours is lost."""

    def __init__(
        self,
        client: KubeClient,
        config: ClaimsConfig,
        *,
        on_released: Callable[[str], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.instance = secrets.token_hex(8)
        self.on_released = on_released
        self.on_lost = on_lost
        self._clock = clock
        self._claims: dict[str, Claim] = {}
        self._by_lease: dict[str, Claim] = {}
        self._active: dict[str, int] = {}  # environment -> term we hold and renew
        self._wake = asyncio.Event()

    def claim(self, environment: str) -> Claim:
        """The claim of ``environment`` (one object per environment, kept)."""
        found = self._claims.get(environment)
        if found is None:
            found = Claim(self.client, self.config, environment, instance=self.instance, clock=self._clock)
            self._claims[environment] = found
            self._by_lease[found.name] = found
        return found

    def held(self) -> list[str]:
        """The environments whose claims this replica holds now, sorted."""
        return sorted(
            env
            for env, term in self._active.items()
            if self._claims[env].term == term and self._claims[env].held
        )

    async def acquire(self, environment: str) -> Fence:
        """Hold ``environment``'s claim (renewed by ``run`` from now on) and return the fence of this
        term; ``ClaimUnavailable`` when another replica holds it."""
        claim = self.claim(environment)
        if not await claim.acquire():
            raise ClaimUnavailable(environment, claim.holder, claim.retry_after)
        self._active[environment] = claim.term
        self._wake.set()
        return claim.fence()

    async def release(self, environment: str) -> None:
        """Stop renewing and release ``environment``'s claim (best effort: it expires anyway)."""
        self._active.pop(environment, None)
        claim = self._claims.get(environment)
        if claim is None:
            return
        try:
            await claim.release()
        except KubeError as exc:
            log.warning("could not release a claim; it will expire", environment=environment, error=str(exc))

    async def release_all(self) -> None:
        """Release every claim held (on shutdown, before leaving the membership)."""
        await asyncio.gather(*(self.release(environment) for environment in list(self._active)))

    @contextlib.asynccontextmanager
    async def hold(self, environment: str) -> AsyncIterator[Fence]:
        """Hold the claim for the block (acquire, renew, release at the end)."""
        fence = await self.acquire(environment)
        try:
            yield fence
        finally:
            await self.release(environment)

    # -- the loops ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Renew the held claims (and watch the group's claims when configured), until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renew_loop(), name="claims-renew")
            if self.config.watch:
                group.create_task(
                    leases.follow(
                        self.client,
                        self.config.namespace,
                        self.config.selector,
                        on_list=self._relisted,
                        on_event=self._event,
                        timeout_seconds=self.config.watch_timeout,
                    ),
                    name="claims-watch",
                )

    async def _renew_loop(self) -> None:
        while True:
            self._wake.clear()
            self._forget_lost()
            now = self._clock()
            due = [self._claims[env] for env in self._active if self._claims[env].next_renewal <= now]
            if due:
                await asyncio.gather(*(self._renew(claim) for claim in due))
                self._forget_lost()
            await leases.wait_or_timeout(self._wake, self._next_wake())

    async def _renew(self, claim: Claim) -> None:
        try:
            async with asyncio.timeout(max(0.05, claim.remaining)):  # never past the deadline
                await claim.renew()
        except (KubeError, TimeoutError) as exc:
            log.warning("claim renewal failed", environment=claim.environment, error=str(exc) or "timeout")

    def _forget_lost(self) -> None:
        """Drop claims whose term ended without a release of ours, and report them."""
        for environment, term in list(self._active.items()):
            claim = self._claims[environment]
            if claim.term == term and claim.held:
                continue
            del self._active[environment]
            if self.on_lost is not None:
                try:
                    self.on_lost(environment)
                except Exception:  # a callback bug must not stop renewals
                    log.exception("claims on_lost failed", environment=environment)

    def _next_wake(self) -> float:
        now = self._clock()
        moments = [now + self.config.renew_interval]
        for environment in self._active:
            claim = self._claims[environment]
            moments.append(claim.next_renewal)
            moments.append(now + claim.remaining)
        return max(0.01, min(moments) - now)

    # -- the watch ---------------------------------------------------------------------------------
    def _claim_of(self, lease: Body) -> Claim | None:
        metadata = lease.get("metadata") or {}
        name = str(metadata.get("name") or "")
        found = self._by_lease.get(name)
        if found is None:
            environment = str((metadata.get("annotations") or {}).get(ENVIRONMENT_ANNOTATION) or "")
            if not environment or self.config.lease_name(environment) != name:
                return None
            found = self.claim(environment)
        return found

    def _relisted(self, items: list[Body]) -> None:
        listed = set()
        for lease in items:
            self._event("MODIFIED", lease)
            listed.add(str((lease.get("metadata") or {}).get("name") or ""))
        for name, claim in self._by_lease.items():
            if name not in listed and not claim.held:
                claim.observe(None)

    def _event(self, event: str, lease: Body) -> None:
        claim = self._claim_of(lease)
        if claim is None:
            return
        before = claim.holder
        claim.observe(None if event == "DELETED" else lease)
        if claim.held or not before or claim.holder or before == self.config.identity:
            return
        if self.on_released is not None:  # another replica's claim just became free
            try:
                self.on_released(claim.environment)
            except Exception:
                log.exception("claims on_released failed", environment=claim.environment)
