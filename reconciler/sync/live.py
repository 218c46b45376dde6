"""The plan stage's reads: each desired object's live state (from the watch caches, or one LIST per
kind), which objects another environment owns, which Namespaces do not exist yet, and what is already
as desired (no request at all).

Without the daemon's caches (the one-shot CLI) the LISTs are kept to what the environment can hold: the
Namespaces are read first, objects in namespaces this sync creates are not read at all (they cannot
exist yet), and a kind whose objects live in a few namespaces is listed in those namespaces only, so a
sync's reads do not grow with every object reconciler manages elsewhere in the cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet

from reconciler.inventory import Inventory
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient, ResourceInfo
from reconciler.kube.errors import NoMatchError
from reconciler.objects import (
    ADOPT_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    Action,
    Body,
    ChangeSetEntry,
    environment_mark,
)
from reconciler.plan.compare import drift
from reconciler.sync.outcome import Reason, SyncFailedError, SyncResult, failure_message
from reconciler.sync.planned import Plan, Planned, PlannedObject, marked_for_other

# a kind whose objects are in at most this many namespaces is listed per namespace, else cluster-wide
SCOPED_LISTS = 3
NAMESPACE = ("v1", "Namespace")


class LiveState:
    """Reads the live counterparts of desired objects."""

    def __init__(self, client: KubeClient, cache: LiveCache | None) -> None:
        self.client = client
        self.cache = cache

    async def load(self, objects: Planned, crd_kinds: set[tuple[str, str]]) -> set[str]:
        """Fill ``live`` of every object; objects of CRDs this render brings are ``WRITE_AFTER_CRD``.
        The namespaces this render creates that do not exist yet."""
        by_kind: dict[tuple[str, str], list[PlannedObject]] = {}
        for planned in objects.values():
            by_kind.setdefault((planned.manifest.api_version, planned.key.kind), []).append(planned)
        if self.cache is not None or NAMESPACE not in by_kind:
            await asyncio.gather(
                *(self._load_kind(av, kind, group, crd_kinds) for (av, kind), group in by_kind.items())
            )
            return await self.new_namespaces(objects)
        await self._load_kind(*NAMESPACE, by_kind.pop(NAMESPACE), crd_kinds)
        fresh = await self.new_namespaces(objects)
        await asyncio.gather(
            *(self._load_kind(av, kind, group, crd_kinds, fresh) for (av, kind), group in by_kind.items())
        )
        return fresh

    async def _load_kind(
        self,
        api_version: str,
        kind: str,
        group: list[PlannedObject],
        crd_kinds: set[tuple[str, str]],
        fresh: AbstractSet[str] = frozenset(),
    ) -> None:
        try:
            info = await self.client.resource(api_version, kind)
        except NoMatchError:
            if ((api_version.rsplit("/", 1)[0] if "/" in api_version else ""), kind) in crd_kinds:
                for planned in group:
                    planned.plan = Plan.WRITE_AFTER_CRD
                return
            raise
        if self.cache is not None:
            await self.cache.ensure(info)
            for planned in group:
                planned.live = self.cache.get(planned.key)
            return
        if info.namespaced:
            group = [p for p in group if p.key.namespace not in fresh]  # the rest cannot exist yet
        if not group:
            return
        found: dict[tuple[str, str], Body] = {}
        for obj in await list_labelled(self.client, info, {p.key.namespace for p in group}):
            metadata = obj.get("metadata") or {}
            found[(str(metadata.get("namespace") or ""), str(metadata.get("name")))] = obj
        for planned in group:
            planned.live = found.get((planned.key.namespace if info.namespaced else "", planned.key.name))

    async def new_namespaces(self, objects: Planned) -> set[str]:
        """Namespaces this render creates that do not exist yet."""
        candidates = [
            p.key.name
            for p in objects.values()
            if p.key.kind == "Namespace" and p.key.group == "" and p.live is None
        ]
        if not candidates:
            return set()
        if len(candidates) <= 3:
            lives = await asyncio.gather(
                *(self.client.get("v1", "Namespace", "", name) for name in candidates)
            )
            return {name for name, live in zip(candidates, lives, strict=True) if live is None}
        existing, _ = await self.client.list(await self.client.resource("v1", "Namespace"))
        names = {str(ns["metadata"]["name"]) for ns in existing}
        return {name for name in candidates if name not in names}


async def list_labelled(client: KubeClient, info: ResourceInfo, namespaces: set[str]) -> list[Body]:
    """Every object of a kind carrying reconciler's label: in each of ``namespaces`` when the kind is
    namespaced and they are few (``SCOPED_LISTS``), else cluster-wide."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
    if not info.namespaced or not namespaces or len(namespaces) > SCOPED_LISTS or "" in namespaces:
        return (await client.list(info, label_selector=selector))[0]
    listings = await asyncio.gather(
        *(client.list(info, label_selector=selector, namespace=namespace) for namespace in sorted(namespaces))
    )
    return [obj for items, _ in listings for obj in items]


def refuse_foreign(objects: Planned, environment: str) -> None:
    """Refuse, before any write, to apply objects another environment manages.

    Two environments declaring one object would take it from each other on every sync (each rewriting
    the fields and the environment mark), and the one that loses it could never prune it. The object is
    named with its owner; annotating it ``reconciler.dev/adopt: "true"`` in this environment takes it
    over on purpose (after which the other environment is refused in turn until it drops it)."""
    foreign = sorted(
        (p.key, f"managed by environment {environment_mark(p.live)!r}")
        for p in objects.values()
        if p.live is not None
        and marked_for_other(p.live, environment)
        and p.manifest.annotation(ADOPT_ANNOTATION, "false").lower() != "true"
    )
    if foreign:
        raise SyncFailedError(
            Reason.OWNERSHIP_CONFLICT,
            failure_message(foreign, "managed by another environment")
            + f'. Declare each object in one environment only, or annotate it {ADOPT_ANNOTATION}: "true" '
            "in this one to take it over.",
        )


def mark_unchanged(objects: Planned, previous: Inventory, result: SyncResult) -> None:
    """Objects applied before with the same manifest whose live state holds every desired field."""
    for key, planned in objects.items():
        entry = previous.entries.get(key)
        if (
            planned.plan is Plan.WRITE
            and planned.live is not None
            and entry is not None
            and entry.applied_hash == planned.hash
            and not drift(planned.manifest.body, planned.live)
        ):
            planned.plan = Plan.UNCHANGED
            result.changeset.add(ChangeSetEntry(key, Action.UNCHANGED))
