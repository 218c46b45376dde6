"""Leader election with a ``coordination.k8s.io/v1`` Lease: only the leader writes to clusters.

The algorithm follows client-go's: a candidate takes the Lease when it does not exist, or when the
holder has not renewed it for a full lease duration *as observed by this candidate's own clock* (so
clock skew between replicas does not matter); the leader renews every ``renew_interval`` and gives up
leadership when it could not renew for a lease duration; on shutdown it releases the Lease so a
successor takes over at once. Every write is guarded by the Lease's resourceVersion.

Followers that receive a webhook pass it on by annotating the Lease (``reconciler.dev/fetch-requested``);
the leader watches its Lease and fetches immediately, so a webhook that reaches any replica makes the
leader act within the same latency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import structlog

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import AlreadyExistsError, ConflictError, KubeError, NotFoundError
from reconciler.settings import LeaderElectionConfig

log = structlog.get_logger(__name__)
NUDGE_ANNOTATION = "reconciler.dev/fetch-requested"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        self.leading = asyncio.Event()
        self.on_nudge = on_nudge
        self.on_change = on_change
        self.holder = ""
        self._observed: tuple[str, str] = ("", "")
        self._observed_at = 0.0
        self._last_renew = 0.0
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

    async def try_acquire_or_renew(self) -> bool:
        """One round of the election; True when we hold the Lease afterwards."""
        await self._ensure_namespace()
        try:
            lease = await self.client.request("GET", self.path)
        except NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.lease_name, "namespace": self.config.namespace},
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
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renew_time = str(spec.get("renewTime") or "")
        self.holder = holder
        if (holder, renew_time) != self._observed:
            self._observed = (holder, renew_time)
            self._observed_at = time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        mine = holder == self.identity
        expired = not holder or time.monotonic() - self._observed_at > duration
        if not mine and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = {**spec, **self._spec(acquire=not mine, transitions=transitions)}
        try:
            await self.client.request("PUT", self.path, body=lease)
        except ConflictError:
            return False
        return True

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        while True:
            try:
                held = await self.try_acquire_or_renew()
                if held:
                    self._last_renew = time.monotonic()
            except KubeError as exc:
                log.warning("leader election round failed", error=str(exc))
                held = (
                    self.leading.is_set() and time.monotonic() - self._last_renew < self.config.lease_duration
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
            await asyncio.sleep(self.config.renew_interval)

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
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.client.request("PUT", self.path, body=lease)
                log.info("released leadership", identity=self.identity)
        except KubeError as exc:
            log.warning("could not release the lease", error=str(exc))
