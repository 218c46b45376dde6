"""Watch caches of the objects reconciler manages: one list+watch per kind, filtered by our label.

A warm cache answers "what is live?" with zero API requests, which is what makes a no-op re-sync free
and drift visible within a second. Each kind's cache lists the objects carrying
``app.kubernetes.io/managed-by=reconciler`` and then watches from the list's resourceVersion; an expired
resourceVersion (410) or a dropped connection relists with backoff. Listeners receive every change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from reconciler import retry
from reconciler.kube import fencing
from reconciler.kube.client import KubeClient, ResourceInfo
from reconciler.kube.errors import KubeError
from reconciler.objects import MANAGED_BY_LABEL, MANAGED_BY_VALUE, Body, ObjectKey

log = structlog.get_logger(__name__)

Listener = Callable[[str, ObjectKey, Body], None]
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


@dataclass
class KindCache:
    """Live objects of one kind, kept current by a watch."""

    info: ResourceInfo
    objects: dict[tuple[str, str], Body] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    relists: int = 0


def compact(body: Body) -> Body:
    """Keep of ``metadata.managedFields`` (often half an object) only what the cache's readers use: each
    manager's name, operation and time (who else writes it: ``drift.other_managers``) and whether it
    owns ``spec.replicas`` (``plan.hpa.owns_replicas``); comparisons ignore managedFields anyway. In
    place; returns ``body``."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("managedFields"), list):
        return body
    entries = metadata["managedFields"]
    compacted = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kept = {key: entry[key] for key in ("manager", "operation", "time", "subresource") if key in entry}
        spec = (entry.get("fieldsV1") or {}).get("f:spec")
        if isinstance(spec, dict) and "f:replicas" in spec:
            kept["fieldsV1"] = {"f:spec": {"f:replicas": {}}}
        compacted.append(kept)
    metadata["managedFields"] = compacted
    return body


class LiveCache:
    """Watch caches for every kind that has been asked for, shared by all environments."""

    def __init__(self, client: KubeClient, *, selector: str = SELECTOR, watch_timeout: int = 300) -> None:
        self.client = client
        self.selector = selector
        self.watch_timeout = watch_timeout
        self._kinds: dict[tuple[str, str], KindCache] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event_type, key, object)`` for every ADDED/MODIFIED/DELETED event."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error when it was not subscribed)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def ensure(self, info: ResourceInfo, timeout: float = 30.0) -> KindCache:
        """Start watching a kind (once) and wait until its first list has arrived."""
        ident = (info.group, info.kind)
        async with self._lock:
            cache = self._kinds.get(ident)
            if cache is None:
                cache = KindCache(info)
                cache.task = asyncio.create_task(
                    self._run(cache),
                    name=f"watch-{info.plural}.{info.group or 'core'}",
                    context=fencing.unfenced(),  # it outlives the sync that started it
                )
                self._kinds[ident] = cache
        async with asyncio.timeout(timeout):
            await cache.synced.wait()
        return cache

    def watching(self, key: ObjectKey) -> bool:
        """True when the kind of ``key`` is cached and synced."""
        cache = self._kinds.get((key.group, key.kind))
        return cache is not None and cache.synced.is_set()

    def get(self, key: ObjectKey) -> Body | None:
        """The cached object (None when absent or not labeled as ours); call ``watching`` first."""
        cache = self._kinds.get((key.group, key.kind))
        if cache is None:
            return None
        return cache.objects.get((key.namespace, key.name))

    def kinds(self) -> list[ResourceInfo]:
        """Every kind being watched."""
        return [cache.info for cache in self._kinds.values()]

    async def close(self) -> None:
        """Stop every watch."""
        tasks = [cache.task for cache in self._kinds.values() if cache.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _notify(self, event: str, body: Body) -> None:
        key = ObjectKey.of(body)
        for listener in self._listeners:
            try:
                listener(event, key, body)
            except Exception:  # a listener bug must not kill the watch
                log.exception("cache listener failed", key=str(key))

    async def _run(self, cache: KindCache) -> None:
        """List, then watch from the list's version, for ever; relisted with backoff
        (``reconciler.retry.relists``) whenever the watch fails or its version expires."""
        async for attempt in retry.relists():
            with attempt:
                await self._list_and_watch(cache)

    async def _list_and_watch(self, cache: KindCache) -> None:
        try:
            items, version = await self.client.list(cache.info, label_selector=self.selector)
            self._relisted(cache, items)
            while True:
                async for event, body in self.client.watch(
                    cache.info, version, label_selector=self.selector, timeout_seconds=self.watch_timeout
                ):
                    version = str(body.get("metadata", {}).get("resourceVersion") or version)
                    if event == "BOOKMARK":
                        continue
                    ident = (str(body["metadata"].get("namespace") or ""), str(body["metadata"]["name"]))
                    compact(body)
                    if event == "DELETED":
                        cache.objects.pop(ident, None)
                    else:
                        cache.objects[ident] = body
                    self._notify(event, body)
        except (KubeError, ValueError, KeyError) as exc:
            log.warning("watch failed; relisting", kind=cache.info.kind, error=str(exc))
            raise

    def _relisted(self, cache: KindCache, items: list[Body]) -> None:
        """Replace the cache with a fresh list; after the first, tell listeners what changed meanwhile."""
        for item in items:
            compact(item)
        fresh = {(str(i["metadata"].get("namespace") or ""), str(i["metadata"]["name"])): i for i in items}
        old = cache.objects
        cache.objects = fresh
        cache.relists += 1
        cache.synced.set()
        if cache.relists == 1:
            return
        for ident, body in old.items():
            if ident not in fresh:
                self._notify("DELETED", body)
        for ident, body in fresh.items():
            if old.get(ident, {}).get("metadata", {}).get("resourceVersion") != body["metadata"].get(
                "resourceVersion"
            ):
                self._notify("MODIFIED", body)
