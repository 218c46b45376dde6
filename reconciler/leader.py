"""Leader election with a ``coordination.k8s.io/v1`` Lease: only the leader writes to clusters.

The algorithm follows client-go's: a candidate takes the Lease when it does not exist, or when the
holder has not renewed it for a full lease duration *as observed by this candidate's own clock* (so
clock skew between replicas does not matter); the leader renews every ``renew_interval`` and stops
leading when it could not renew within ``renew_deadline`` (shorter than the lease duration, so it has
stopped before a follower may take over; a renewal that hangs is cut off at the deadline too); on
shutdown it releases the Lease so a successor takes over at once. Every write is guarded by the Lease's
resourceVersion.

Identities are stable (the pod name: ``settings`` takes it from ``POD_NAME`` or ``HOSTNAME``), so a
replica restarted after a crash finds the Lease held by its own identity. It takes it back at once,
without waiting out the lease duration, once the Lease was not renewed for two renew intervals by its
own wall clock (the restarted process runs on the same node as its predecessor). Each process also
writes its own random instance id beside the holder (``reconciler.dev/holder-instance``): a leader that
finds another instance holding the Lease under its identity (two live processes sharing an identity, a
misconfiguration) stops leading at once, and from then on treats that identity's Lease as another
holder's, so two such processes never both lead for longer than one renew interval.

Followers that receive a webhook pass it on by annotating the Lease (``reconciler.dev/fetch-requested``);
the leader watches its Lease and fetches immediately, so a webhook that reaches any replica makes the
leader act within the same latency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import AlreadyExistsError, ConflictError, KubeError, NotFoundError
from reconciler.settings import LeaderElectionConfig

log = structlog.get_logger(__name__)
NUDGE_ANNOTATION = "reconciler.dev/fetch-requested"
INSTANCE_ANNOTATION = "reconciler.dev/holder-instance"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _age(renew_time: str) -> float | None:
    """Seconds since ``renew_time`` (a Lease's MicroTime) by this machine's clock; None if unreadable."""
    try:
        stamp = dt.datetime.fromisoformat(renew_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - stamp).total_seconds()


class LeaderElector:
    """Campaigns for, holds and releases the Lease; ``leading`` is set while we are the leader."""

    def __init__(
        self,
        client: KubeClient,
        config: LeaderElectionConfig,
        *,
        on_nudge: Callable[[str], None] | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.identity = config.identity
        self.instance = secrets.token_hex(8)  # this process, among processes of the same identity
        self.leading = asyncio.Event()
        self.on_nudge = on_nudge
        self.on_change = on_change
        self.holder = ""
        self.shared_identity = False  # another live process uses our identity (see the module docstring)
        self._observed: tuple[str, str, str] = ("", "", "")
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._retry_in = config.renew_interval
        self._last_nudge = ""
        self._watch_task: asyncio.Task[None] | None = None
        self._namespace_ready = False

    @property
    def path(self) -> str:
        """REST path of the Lease."""
        return (
            f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases/{self.config.lease_name}"
        )

    def _spec(self, acquire: bool, transitions: int) -> dict[str, Any]:
        now = _now()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquire:
            spec["acquireTime"] = now
        return spec

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        await self.client.ensure_namespace(self.config.namespace)
        self._namespace_ready = True

    def _predecessor_gone(self, renew_time: str) -> bool:
        """The Lease names our identity but another instance: True when that instance is not renewing it
        (it would every renew interval), i.e. it was this pod before a restart, not a live twin."""
        interval = self.config.renew_interval
        age = _age(renew_time)
        threshold = 2 * interval + 0.5
        if age is None or age > threshold:
            return True
        self._retry_in = min(interval, max(0.05, threshold - age + 0.05))  # look again right then
        return False

    async def try_acquire_or_renew(self) -> bool:
        """One round of the election; True when we hold the Lease afterwards.

        A conflict on our own renewal (a follower's nudge annotated the Lease between our read and our
        write) is retried at once with a fresh read: it must not cost the leadership."""
        await self._ensure_namespace()
        for _ in range(3):
            held = await self._attempt()
            if held is not None:
                return held
        return False

    async def _attempt(self) -> bool | None:
        """One read and (maybe) one write of the Lease; None when our renewal hit a conflict."""
        self._retry_in = self.config.renew_interval
        try:
            lease = await self.client.request("GET", self.path)
        except NotFoundError:
            return await self._create()
        return await self._take_or_renew(lease)

    async def _create(self) -> bool:
        """Create the Lease, held by us; False when another candidate created it first."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.config.lease_name,
                "namespace": self.config.namespace,
                "annotations": {INSTANCE_ANNOTATION: self.instance},
            },
            "spec": self._spec(acquire=True, transitions=0),
        }
        try:
            await self.client.request(
                "POST",
                f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases",
                body=body,
            )
        except (AlreadyExistsError, ConflictError):
            return False
        return True

    async def _take_or_renew(self, lease: dict[str, Any]) -> bool | None:
        """Renew ``lease`` (ours), or take it when it expired or our previous process held it."""
        spec = lease.get("spec") or {}
        metadata = lease.setdefault("metadata", {})
        annotations = metadata.get("annotations") or {}
        holder = str(spec.get("holderIdentity") or "")
        renew_time = str(spec.get("renewTime") or "")
        instance = str(annotations.get(INSTANCE_ANNOTATION) or "")
        self.holder = holder
        if (holder, renew_time, instance) != self._observed:
            self._observed = (holder, renew_time, instance)
            self._observed_at = time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        ours = holder == self.identity
        mine = ours and instance == self.instance
        if ours and not mine and self.leading.is_set():
            self.shared_identity = True
            log.error(
                "another process holds the Lease under this replica's identity; identities must be "
                "unique (set POD_NAME or leader_election.identity per replica); stepping down",
                identity=self.identity,
            )
            return False
        expired = not holder or time.monotonic() - self._observed_at > duration
        reclaim = ours and not mine and not self.shared_identity and self._predecessor_gone(renew_time)
        if not mine and not expired and not reclaim:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        lease["spec"] = {**spec, **self._spec(acquire=not mine, transitions=transitions)}
        metadata["annotations"] = {**annotations, INSTANCE_ANNOTATION: self.instance}
        try:
            await self.client.request("PUT", self.path, body=lease)
        except ConflictError:
            return None if mine else False
        if reclaim:
            log.info("took the Lease back from this replica's previous process", identity=self.identity)
        return True

    async def _round(self) -> bool:
        """One election round, cut off at the renew deadline while leading."""
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (a stop that hangs)
        if not self.leading.is_set():
            async with asyncio.timeout(self.config.lease_duration):
                return await self.try_acquire_or_renew()
        remaining = self._last_renew + self.config.renew_deadline - time.monotonic()
        async with asyncio.timeout(max(0.05, remaining)):
            return await self.try_acquire_or_renew()

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        while True:
            try:
                held = await self._round()
                if held:
                    self._last_renew = time.monotonic()
            except (KubeError, TimeoutError) as exc:
                log.warning("leader election round failed", error=str(exc) or type(exc).__name__)
                held = (
                    self.leading.is_set() and time.monotonic() - self._last_renew < self.config.renew_deadline
                )
            if held and not self.leading.is_set():
                log.info("became the leader", identity=self.identity)
                self.holder = self.identity
                self.leading.set()
                self._watch_task = asyncio.create_task(self._watch_nudges(), name="lease-watch")
                if self.on_change:
                    self.on_change(True)
            elif not held and self.leading.is_set():
                log.warning("lost leadership", identity=self.identity)
                self.leading.clear()
                if self._watch_task:
                    self._watch_task.cancel()
                if self.on_change:
                    self.on_change(False)
            await asyncio.sleep(self.config.renew_interval if held else self._retry_in)

    async def _watch_nudges(self) -> None:
        info = await self.client.resource("coordination.k8s.io/v1", "Lease")
        while True:
            try:
                async for _, lease in self.client.watch(
                    info,
                    "",
                    namespace=self.config.namespace,
                    field_selector=f"metadata.name={self.config.lease_name}",
                    timeout_seconds=300,
                ):
                    nudge = ((lease.get("metadata") or {}).get("annotations") or {}).get(NUDGE_ANNOTATION, "")
                    if nudge and nudge != self._last_nudge:
                        self._last_nudge = nudge
                        if self.on_nudge:
                            self.on_nudge(nudge.split("@", 1)[-1])
            except KubeError as exc:
                log.warning("lease watch failed", error=str(exc))
                await asyncio.sleep(1)

    async def nudge(self, sha: str) -> None:
        """As a follower: ask the leader to fetch now (annotates the Lease)."""
        body = {"metadata": {"annotations": {NUDGE_ANNOTATION: f"{_now()}@{sha or 'unknown'}"}}}
        await self.client.request("PATCH", self.path, body=body, content_type="application/merge-patch+json")

    async def release(self) -> None:
        """Give the Lease up (on shutdown) so a successor takes over at once."""
        if self._watch_task:
            self._watch_task.cancel()
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = await self.client.request("GET", self.path)
            annotations = (lease.get("metadata") or {}).get("annotations") or {}
            spec = lease.get("spec") or {}
            if (
                spec.get("holderIdentity") == self.identity
                and annotations.get(INSTANCE_ANNOTATION, self.instance) == self.instance
            ):
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.client.request("PUT", self.path, body=lease)
                log.info("released leadership", identity=self.identity)
        except KubeError as exc:
            log.warning("could not release the lease", error=str(exc))
