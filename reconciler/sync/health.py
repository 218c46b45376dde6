"""The health stage: how the objects of a stage (or of the whole sync) are, and waiting until they are
healthy, with a deadline that names every object still waiting and why.

Waits are driven by the watch caches: the waiter wakes when an event arrives for an object it waits on,
so a Deployment that becomes Available is seen at once and an unchanged one costs no request. The
one-shot CLI has no caches: its first look at a kind is one LIST, after which the kind is watched for
the rest of the sync (later stages and the final health read it from there), never a GET per object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.health import Health, HealthStatus, assess
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import NoMatchError
from reconciler.objects import Body, Manifest, ObjectKey
from reconciler.sync.live import list_labelled
from reconciler.sync.outcome import Reason, SyncFailedError
from reconciler.sync.planned import older_than

# Degraded is a verdict, not a phase: it gets a short grace period, not the whole timeout
DEGRADED_GRACE = 10.0
# while every waited object is watched, a poll only guards against a missed event
WATCHED_POLL = 5.0


STALE = Health(HealthStatus.PROGRESSING, "waiting for the watch to show the version just applied")


@dataclass
class _Waiting:
    """One wait's objects: those still waited on, and those a watch event named since the last look."""

    manifests: dict[ObjectKey, Manifest]
    waiting: dict[ObjectKey, Health] = field(default_factory=dict)
    last: dict[ObjectKey, Health] = field(default_factory=dict)  # every object's latest assessment
    dirty: set[ObjectKey] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    looked: bool = False

    def on_event(self, _event: str, key: ObjectKey, _body: Body) -> None:
        # before the first look every object counts (an event during it must not be lost)
        if key in self.waiting or (not self.looked and key in self.manifests):
            self.dirty.add(key)
            self.changed.set()

    def pending(self) -> list[Manifest]:
        """The manifests still waited on."""
        return [self.manifests[key] for key in self.waiting]

    def to_check(self, full: bool) -> list[Manifest]:
        """All manifests the first time; then every waiting one (``full``) or those events named."""
        if not self.looked:
            keys: Iterable[ObjectKey] = self.manifests
        elif full:
            keys = list(self.waiting)
        else:
            keys = [key for key in self.dirty if key in self.waiting]
        self.dirty.clear()
        return [self.manifests[key] for key in keys]

    def update(self, healths: Mapping[ObjectKey, Health]) -> None:
        """Take in what was assessed: a ready object leaves the wait."""
        self.looked = True
        self.last.update(healths)
        for key, health in healths.items():
            if health.ready:
                self.waiting.pop(key, None)
            else:
                self.waiting[key] = health


class HealthWatch:
    """Reads and waits for the health of desired objects.

    ``applied`` maps the objects this sync wrote to the (generation, resourceVersion) the API server
    answered: until a watch cache holds at least that version, the object counts as Progressing, so a
    stale copy (the healthy old Deployment) never passes for the new one.
    """

    def __init__(self, client: KubeClient, cache: LiveCache | None) -> None:
        self.client = client
        self.cache = cache
        # without the daemon's caches: the kinds waited on so far, watched until ``release``
        self._own: LiveCache | None = None

    async def release(self) -> None:
        """Stop the watches a wait started without the daemon's caches (end of a one-shot sync)."""
        own, self._own = self._own, None
        if own is not None:
            await own.close()

    async def healths(
        self,
        manifests: Sequence[Manifest],
        applied: Mapping[ObjectKey, tuple[int, int]] | None = None,
        cache: LiveCache | None = None,
    ) -> dict[ObjectKey, Health]:
        """Each object's health now (from the caches, else one LIST per kind)."""
        cache = cache or self.cache or self._own
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
        items = await list_labelled(self.client, info, {m.key.namespace for m in group})
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
    ) -> dict[ObjectKey, Health]:
        """Wait until every object is healthy; each object's health when it was found ready (Healthy,
        or Suspended). ``SyncFailedError`` (HealthCheckFailed) after ``timeout`` s, or after
        ``DEGRADED_GRACE`` s of a Degraded one.

        An object found ready is not looked at again (as kubectl wait). With watch caches, a watch
        event re-assesses only the objects it names (thousands of objects each changing several times
        would otherwise cost a full pass per event: quadratic); every object still waited on is
        assessed again when no event came for a while."""
        started = time.monotonic()
        state = _Waiting({m.key: m for m in manifests})
        cache, extended = self.cache or self._own, self.cache is not None
        if cache is not None:
            cache.subscribe(state.on_event)
        try:
            delay, full, watched = 0.1, True, False
            while True:
                state.changed.clear()
                state.update(await self.healths(state.to_check(full), applied, cache))
                if not state.waiting:
                    return state.last
                self._check_deadline(name, state.waiting, time.monotonic() - started, timeout)
                if not extended:
                    # the one-shot CLI has no caches: watch the kinds still waited on for the rest of
                    # the sync (one LIST and one WATCH each) instead of listing them on every poll
                    extended = True
                    if cache is None:
                        cache = self._own = LiveCache(self.client)
                        cache.subscribe(state.on_event)
                    await self._watch(cache, state.pending(), state.waiting)
                    continue
                # the waiting set only shrinks: once all its kinds are watched, they stay watched
                watched = watched or (cache is not None and all(cache.watching(k) for k in state.waiting))
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    async with asyncio.timeout(self._pause(state, watched, delay, started, timeout)):
                        await state.changed.wait()
                    full = not watched
                except TimeoutError:
                    delay, full = min(delay * 1.5, 1.0), True
        finally:
            if cache is not None:
                cache.unsubscribe(state.on_event)

    @staticmethod
    def _pause(state: _Waiting, watched: bool, delay: float, started: float, timeout: float) -> float:
        """How long to wait for an event before assessing every waiting object again."""
        remaining = max(0.05, timeout - (time.monotonic() - started))
        if any(h.status == HealthStatus.DEGRADED for h in state.waiting.values()):
            remaining = max(0.05, min(timeout, DEGRADED_GRACE) - (time.monotonic() - started))
        return min(WATCHED_POLL if watched else delay, remaining)

    async def _watch(
        self, cache: LiveCache, manifests: Sequence[Manifest], waiting: Mapping[ObjectKey, Health]
    ) -> None:
        """Watch the kinds of the ``waiting`` objects in ``cache`` (a kind not served, or whose first
        list does not arrive in time, is left out: its objects are listed on each poll, as before)."""
        kinds = {(m.api_version, m.key.kind) for m in manifests if m.key in waiting}
        for api_version, kind in sorted(kinds):
            try:
                await cache.ensure(await self.client.resource(api_version, kind), timeout=10.0)
            except (NoMatchError, TimeoutError):
                continue

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
