"""The plan stage's reads: each desired object's live state (from the watch caches, or one LIST per
kind), which objects another environment owns, which Namespaces do not exist yet, and what is already
as desired (no request at all)."""

from __future__ import annotations

import asyncio

from reconciler.inventory import Inventory
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
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


class LiveState:
    """Reads the live counterparts of desired objects."""

    def __init__(self, client: KubeClient, cache: LiveCache | None) -> None:
        self.client = client
        self.cache = cache

    async def load(self, objects: Planned, crd_kinds: set[tuple[str, str]]) -> None:
        """Fill ``live`` of every object; objects of CRDs this render brings are ``WRITE_AFTER_CRD``."""
        by_kind: dict[tuple[str, str], list[PlannedObject]] = {}
        for planned in objects.values():
            by_kind.setdefault((planned.manifest.api_version, planned.key.kind), []).append(planned)
        await asyncio.gather(
            *(self._load_kind(av, kind, group, crd_kinds) for (av, kind), group in by_kind.items())
        )

    async def _load_kind(
        self, api_version: str, kind: str, group: list[PlannedObject], crd_kinds: set[tuple[str, str]]
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
        found: dict[tuple[str, str], Body] = {}
        listing = await self.client.list(info, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        for obj in listing[0]:
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
