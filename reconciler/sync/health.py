"""The health stage: how the objects of a stage (or of the whole sync) are, and waiting until they are
healthy, with a deadline that names every object still waiting and why.

Waits are driven by the watch caches: the waiter wakes when an event arrives for an object it waits on,
so a Deployment that becomes Available is seen at once and an unchanged one costs no request. Kinds not
watched (the one-shot CLI has no caches) are read with one LIST per kind per poll, never a GET per
object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from reconciler.health import Health, HealthStatus, assess
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import NoMatchError
from reconciler.objects import MANAGED_BY_LABEL, MANAGED_BY_VALUE, Body, Manifest, ObjectKey
from reconciler.sync.outcome import Reason, SyncFailedError
from reconciler.sync.planned import older_than

# Degraded is a verdict, not a phase: it gets a short grace period, not the whole timeout
DEGRADED_GRACE = 10.0
# while every waited object is watched, a poll only guards against a missed event
WATCHED_POLL = 5.0


STALE = Health(HealthStatus.PROGRESSING, "waiting for the watch to show the version just applied")


class HealthWatch:
    """Reads and waits for the health of desired objects.

    ``applied`` maps the objects this sync wrote to the (generation, resourceVersion) the API server
    answered: until a watch cache holds at least that version, the object counts as Progressing, so a
    stale copy (the healthy old Deployment) never passes for the new one.
    """

    def __init__(self, client: KubeClient, cache: LiveCache | None) -> None:
        self.client = client
        self.cache = cache

    async def healths(
        self,
        manifests: Sequence[Manifest],
        applied: Mapping[ObjectKey, tuple[int, int]] | None = None,
        cache: LiveCache | None = None,
    ) -> dict[ObjectKey, Health]:
        """Each object's health now (from the caches, else one LIST per kind)."""
        cache = cache or self.cache
        lives: dict[ObjectKey, Body | None] = {}
        unwatched: dict[tuple[str, str], list[Manifest]] = {}
        for manifest in manifests:
            if cache is not None and cache.watching(manifest.key):
                lives[manifest.key] = cache.get(manifest.key)
            else:
                unwatched.setdefault((manifest.api_version, manifest.key.kind), []).append(manifest)
        listed = await asyncio.gather(
            *(self._list(av, kind, group) for (av, kind), group in unwatched.items())
        )
        for found in listed:
            lives.update(found)
        healths: dict[ObjectKey, Health] = {}
        for manifest in manifests:
            live = lives.get(manifest.key)
            minimum = (applied or {}).get(manifest.key)
            stale = live is not None and minimum is not None and older_than(live, minimum)
            healths[manifest.key] = STALE if stale else assess(live)
        return healths

    async def _list(self, api_version: str, kind: str, group: list[Manifest]) -> dict[ObjectKey, Body | None]:
        try:
            info = await self.client.resource(api_version, kind)
        except NoMatchError:
            return dict.fromkeys((m.key for m in group), None)
        items, _ = await self.client.list(info, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        by_name = {
            (
                str(i["metadata"].get("namespace") or "") if info.namespaced else "",
                str(i["metadata"]["name"]),
            ): i
            for i in items
        }
        return {m.key: by_name.get((m.key.namespace if info.namespaced else "", m.key.name)) for m in group}

    async def wait(
        self,
        name: str,
        manifests: Sequence[Manifest],
        timeout: float,
        applied: Mapping[ObjectKey, tuple[int, int]] | None = None,
    ) -> int:
        """Wait until every object is healthy (the number of objects); ``SyncFailedError``
        (HealthCheckFailed) after ``timeout`` s, or after ``DEGRADED_GRACE`` s of a Degraded one."""
        started = time.monotonic()
        changed = asyncio.Event()
        waiting: dict[ObjectKey, Health] = {}

        def on_event(_: str, key: ObjectKey, __: Body) -> None:
            if key in waiting:
                changed.set()

        cache, own = self.cache, False
        if cache is not None:
            cache.subscribe(on_event)
        try:
            delay = 0.1
            pending = list(manifests)  # an object found ready is not looked at again (as kubectl wait)
            while True:
                changed.clear()
                healths = await self.healths(pending, applied, cache)
                waiting = {key: h for key, h in healths.items() if not h.ready}
                if not waiting:
                    return len(manifests)
                pending = [m for m in pending if m.key in waiting]
                self._check_deadline(name, waiting, time.monotonic() - started, timeout)
                if cache is None:
                    # the one-shot CLI has no caches: watch the kinds still waited on for the rest of
                    # this wait (one LIST and one WATCH each) instead of listing them on every poll
                    cache, own = await self._watch(pending, waiting), True
                    cache.subscribe(on_event)
                    continue
                watched = all(cache.watching(k) for k in waiting)
                pause = WATCHED_POLL if watched else delay
                remaining = max(0.05, timeout - (time.monotonic() - started))
                degraded = any(h.status == HealthStatus.DEGRADED for h in waiting.values())
                if degraded:
                    remaining = max(0.05, min(timeout, DEGRADED_GRACE) - (time.monotonic() - started))
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    async with asyncio.timeout(min(pause, remaining)):
                        await changed.wait()
                except TimeoutError:
                    delay = min(delay * 1.5, 1.0)
        finally:
            if cache is not None:
                cache.unsubscribe(on_event)
                if own:
                    await cache.close()

    async def _watch(self, manifests: Sequence[Manifest], waiting: Mapping[ObjectKey, Health]) -> LiveCache:
        """A cache watching the kinds of the ``waiting`` objects (a kind not served, or whose first list
        does not arrive in time, is left out: its objects are listed on each poll, as before)."""
        cache = LiveCache(self.client)
        kinds = {(m.api_version, m.key.kind) for m in manifests if m.key in waiting}
        for api_version, kind in sorted(kinds):
            try:
                await cache.ensure(await self.client.resource(api_version, kind), timeout=10.0)
            except (NoMatchError, TimeoutError):
                continue
        return cache

    @staticmethod
    def _check_deadline(name: str, waiting: dict[ObjectKey, Health], elapsed: float, timeout: float) -> None:
        degraded = any(h.status == HealthStatus.DEGRADED for h in waiting.values())
        if elapsed > timeout or (degraded and elapsed > min(timeout, DEGRADED_GRACE)):
            details = "; ".join(
                f"{key}: {h.status.value}: {h.message}" for key, h in sorted(waiting.items())[:10]
            )
            raise SyncFailedError(
                Reason.HEALTH_CHECK_FAILED,
                f"stage {name}: {len(waiting)} object(s) not healthy after {elapsed:.0f} s: {details}",
            )
