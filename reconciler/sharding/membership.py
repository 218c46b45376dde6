"""Who the members of a shard group are: every replica holds a Lease of its own and watches the others.

Each replica creates ``reconciler-member-<identity>`` (a DNS-1123 name; the real identity is kept in
``spec.holderIdentity``) in the daemon's namespace, labelled ``reconciler.dev/member=true`` and with its
shard group (``reconciler.dev/shard-group``, so daemons of different configurations sharing a namespace
never count each other), and renews it every ``renew_interval``. It lists and watches the group's member
Leases, so a join or a release is seen within the watch's latency (well under a second).

A member is live until it has not been seen renewing for its ``leaseDurationSeconds``, by this replica's
own clock (``reconciler.sharding.leases.Sighting``); a deleted Lease (a replica's ``release()`` on
SIGTERM) or one whose holder was emptied is gone at once. This replica counts itself a member only while
its last successful renewal is younger than ``renew_deadline`` (shorter than the lease duration): a
replica cut off from the API server stops counting itself before the others stop counting it.

Leases left behind by replicas that died (a Deployment's pods get new names) are deleted by any member
that has seen one unrenewed for two lease durations, with the resourceVersion it saw as a precondition,
so a Lease renewed meanwhile is never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import AlreadyExistsError, ConflictError, KubeError, NotFoundError
from reconciler.objects import Body
from reconciler.sharding import leases
from reconciler.sharding.leases import DEFAULT_GROUP, GROUP_LABEL, INSTANCE_ANNOTATION, Sighting

log = structlog.get_logger(__name__)

MEMBER_LABEL = "reconciler.dev/member"
MEMBER_PREFIX = "reconciler-member-"
OnChange = Callable[[tuple[str, ...]], None]


@dataclass(frozen=True)
class MembershipConfig:
    """Where the member Leases live and how they are timed.

    ``renew_interval`` < ``renew_deadline`` < ``lease_duration``: the replica renews every interval,
    counts itself a member while its last renewal is younger than the deadline, and the others count it
    until they have not seen a renewal for the lease duration."""

    namespace: str
    identity: str
    shard_group: str = DEFAULT_GROUP
    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    renew_interval: float = 2.0
    watch_timeout: int = 60
    labels: dict[str, str] = field(default_factory=dict)  # extra labels on our Lease (app, instance)

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("membership needs an identity (the pod name)")
        if not 0 < self.renew_interval < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "membership timings must satisfy 0 < renew_interval < renew_deadline < lease_duration, got "
                f"{self.renew_interval}, {self.renew_deadline}, {self.lease_duration}"
            )

    @property
    def lease_name(self) -> str:
        """Name of this replica's member Lease."""
        return leases.dns_name(MEMBER_PREFIX, self.identity)

    @property
    def selector(self) -> str:
        """Label selector of the group's member Leases."""
        return f"{MEMBER_LABEL}=true,{GROUP_LABEL}={leases.label_value(self.shard_group)}"


class Membership:
    """This replica's member Lease and its view of the group: ``members()``, ``on_change``, ``ready``."""

    def __init__(
        self,
        client: KubeClient,
        config: MembershipConfig,
        *,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.identity = config.identity
        self.instance = secrets.token_hex(8)
        self.on_change = on_change
        self.ready = asyncio.Event()  # our Lease is written and the group was listed: members() is real
        self._clock = clock
        self._lease: Body | None = None  # our Lease as the API server last returned it
        self._valid_until = 0.0
        self._released = False
        self._listed = False
        self._sightings: dict[str, Sighting] = {}
        self._reported: tuple[str, ...] | None = None
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # -- the view ----------------------------------------------------------------------------------
    @property
    def joined(self) -> bool:
        """True while this replica counts itself a member (renewed within ``renew_deadline``)."""
        return not self._released and self._clock() < self._valid_until

    def members(self) -> tuple[str, ...]:
        """Identities of the live members, sorted (this replica's included while ``joined``)."""
        now = self._clock()
        own = self.config.lease_name
        live = {
            sighting.holder
            for name, sighting in self._sightings.items()
            if name != own and not sighting.expired(now)
        }
        if self.joined:
            live.add(self.identity)
        return tuple(sorted(live))

    # -- the loops ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Join, renew, watch the group and report changes, until cancelled."""
        await self.client.ensure_namespace(self.config.namespace)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renew_loop(), name="membership-renew")
            group.create_task(
                leases.follow(
                    self.client,
                    self.config.namespace,
                    self.config.selector,
                    on_list=self._relisted,
                    on_event=self._event,
                    timeout_seconds=self.config.watch_timeout,
                ),
                name="membership-watch",
            )
            group.create_task(self._report_loop(), name="membership-report")

    async def _renew_loop(self) -> None:
        while True:
            renewed = await self.renew()
            if renewed:
                await self._collect_garbage()
            await asyncio.sleep(
                self.config.renew_interval if renewed else min(0.5, self.config.renew_interval)
            )

    async def renew(self) -> bool:
        """Write our Lease once (create or renew); True when the API server accepted it. After
        ``release()`` nothing is written."""
        async with self._write_lock:
            if self._released:
                return False
            started = self._clock()
            try:
                async with asyncio.timeout(self.config.renew_deadline):
                    lease = await self._write()
            except (KubeError, TimeoutError) as exc:
                log.warning(
                    "member lease renewal failed", identity=self.identity, error=str(exc) or "timeout"
                )
                return False
            self._lease = lease
            self._valid_until = started + self.config.renew_deadline
            self._sightings[self.config.lease_name] = leases.sight(
                self._sightings.get(self.config.lease_name), lease, started, self.config.lease_duration
            )
        self._wake.set()
        return True

    async def _write(self) -> Body:
        """Create or renew our Lease: a conditional update of the version we hold; on a conflict or a
        vanished Lease, read again and retry (twice)."""
        path = leases.lease_path(self.config.namespace, self.config.lease_name)
        for _ in range(3):
            try:
                if self._lease is None:
                    return await self.client.request(
                        "POST", leases.collection_path(self.config.namespace), body=self._body(None)
                    )
                return await self.client.request("PUT", path, body=self._body(self._lease))
            except (AlreadyExistsError, ConflictError):
                self._lease = await self._read(path)
                self._warn_if_shared()
            except NotFoundError:
                self._lease = None
        raise ConflictError(path, "member Lease kept changing under us")

    async def _read(self, path: str) -> Body | None:
        try:
            return await self.client.request("GET", path)
        except NotFoundError:
            return None

    def _warn_if_shared(self) -> None:
        lease = self._lease
        if lease is None or not self._valid_until:
            return
        instance = leases.instance_of(lease)
        if leases.holder_of(lease) == self.identity and instance and instance != self.instance:
            log.error(
                "another process renews this replica's member Lease: identities must be unique per replica",
                identity=self.identity,
            )

    def _body(self, current: Body | None) -> Body:
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": leases.whole_seconds(self.config.lease_duration),
            "renewTime": leases.micro_time(),
        }
        labels = {
            **self.config.labels,
            MEMBER_LABEL: "true",
            GROUP_LABEL: leases.label_value(self.config.shard_group),
        }
        if current is None:
            spec["acquireTime"] = spec["renewTime"]
            return leases.lease_body(
                self.config.namespace,
                self.config.lease_name,
                labels=labels,
                annotations={INSTANCE_ANNOTATION: self.instance},
                spec=spec,
            )
        body = copy.deepcopy(current)
        metadata = body.setdefault("metadata", {})
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
        metadata["annotations"] = {**(metadata.get("annotations") or {}), INSTANCE_ANNOTATION: self.instance}
        body["spec"] = {**(body.get("spec") or {}), **spec}
        return body

    async def _collect_garbage(self) -> None:
        """Delete Leases of members seen unrenewed for two lease durations (a precondition on the
        resourceVersion we saw keeps a Lease renewed meanwhile)."""
        now = self._clock()
        for name, sighting in list(self._sightings.items()):
            if name == self.config.lease_name or now < sighting.seen_at + 2 * sighting.duration:
                continue
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": sighting.version},
            }
            path = leases.lease_path(self.config.namespace, name)
            try:
                await self.client.request("DELETE", path, body=body)
                log.info("deleted the Lease of a departed member", lease=name, holder=sighting.holder)
            except NotFoundError:
                pass
            except ConflictError:  # renewed after all: our watch is behind, look again
                with contextlib.suppress(KubeError):
                    fresh = await self._read(path)
                    if fresh is not None:
                        self._event("MODIFIED", fresh)
                continue
            except KubeError as exc:
                log.warning("could not delete a departed member's Lease", lease=name, error=str(exc))
                continue
            self._sightings.pop(name, None)

    # -- the watch ---------------------------------------------------------------------------------
    def _relisted(self, items: list[Body]) -> None:
        now = self._clock()
        fresh: dict[str, Sighting] = {}
        for lease in items:
            name = str((lease.get("metadata") or {}).get("name") or "")
            fresh[name] = leases.sight(self._sightings.get(name), lease, now, self.config.lease_duration)
        self._sightings = fresh
        self._listed = True
        self._wake.set()

    def _event(self, event: str, lease: Body) -> None:
        name = str((lease.get("metadata") or {}).get("name") or "")
        if event == "DELETED":
            self._sightings.pop(name, None)
        else:
            self._sightings[name] = leases.sight(
                self._sightings.get(name), lease, self._clock(), self.config.lease_duration
            )
        self._wake.set()

    async def _report_loop(self) -> None:
        """Call ``on_change`` whenever the members differ from the last report: after every watch event
        and renewal, and when a member's or our own lease runs out (no event announces that)."""
        while True:
            self._wake.clear()
            self._report()
            await leases.wait_or_timeout(self._wake, self._next_expiry())

    def _report(self) -> None:
        if self._listed and self.joined:
            self.ready.set()
        if not self.ready.is_set():
            return
        members = self.members()
        if members == self._reported:
            return
        self._reported = members
        log.info("shard members changed", members=list(members), identity=self.identity)
        if self.on_change is not None:
            try:
                self.on_change(members)
            except Exception:  # a callback bug must not stop the membership
                log.exception("membership on_change failed")

    def _next_expiry(self) -> float:
        """Seconds until the earliest moment the members can change without an event."""
        now = self._clock()
        moments = [s.expires_at for s in self._sightings.values() if s.holder and s.expires_at > now]
        if self._valid_until > now:
            moments.append(self._valid_until)
        soonest = min(moments, default=now + self.config.renew_interval)
        return min(max(0.01, soonest - now + 0.001), self.config.renew_interval)

    # -- leaving -----------------------------------------------------------------------------------
    async def release(self) -> None:
        """Leave the group at once (on SIGTERM): stop renewing and delete our Lease, so the others see
        the departure through their watch instead of waiting out the lease duration. Release the
        environments' claims first: the others start taking them as soon as they see us gone."""
        async with self._write_lock:
            if self._released:
                return
            self._released = True
            self._valid_until = 0.0
            try:
                await self.client.request(
                    "DELETE", leases.lease_path(self.config.namespace, self.config.lease_name)
                )
                log.info("left the shard group", identity=self.identity)
            except NotFoundError:
                pass
            except KubeError as exc:
                log.warning("could not delete the member Lease; it will expire", error=str(exc))
        self._wake.set()
