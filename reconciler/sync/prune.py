"""The prune stage: delete what left Git, from the inventory, only as ``plan.prune`` allows (never on an
empty or failed render, never past the circuit breaker, never what another environment or nobody owns),
and never anything of the daemon itself. Live objects are read concurrently; a failed deletion stays in
the inventory to be retried."""

from __future__ import annotations

import asyncio

from reconciler.inventory import Inventory
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError, NoMatchError, NotFoundError
from reconciler.objects import Action, Body, ChangeSetEntry, ObjectKey
from reconciler.plan.diff import unified_diff
from reconciler.plan.prune import plan_prune
from reconciler.sync.outcome import Progress, SyncOptions, SyncResult
from reconciler.tenancy import AccessPolicy, Target, reserved_reason

READ_CONCURRENCY = 16


class Pruner:
    """Deletes what left Git."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def prune(
        self,
        previous: Inventory,
        desired: set[ObjectKey],
        options: SyncOptions,
        policy: AccessPolicy,
        result: SyncResult,
        progress: Progress,
    ) -> set[ObjectKey]:
        """Delete what left Git (when allowed; only listed in ``result`` with ``options.dry_run``);
        the keys to keep in the inventory for a retry."""
        reserved = {key for key in previous.keys if reserved_reason(Target(key, None), policy)}
        for key in sorted(reserved - desired):
            # recorded before the daemon's namespace was reserved: never deleted, no longer ours
            result.changeset.add(
                ChangeSetEntry(key, Action.SKIPPED, message="not pruned: it belongs to the daemon itself")
            )
        previous_keys = previous.keys - reserved
        candidates = sorted(key for key in previous_keys if key not in desired)
        if not options.prune.enabled:
            return set(candidates)  # not pruned, so still owned: keep them in the inventory
        if not candidates:
            return set()
        live = await self._read(previous, candidates, options.concurrency)
        plan = plan_prune(previous_keys, desired, live, options.environment, options.prune)
        for key, reason in sorted(plan.kept.items()):
            result.changeset.add(ChangeSetEntry(key, Action.SKIPPED, message=f"not pruned: {reason}"))
        if plan.blocked:
            result.prune_blocked = plan.blocked
            progress(f"prune blocked: {plan.blocked}")
            return set(plan.kept)
        if options.dry_run:
            for key in plan.delete:
                result.changeset.add(
                    ChangeSetEntry(key, Action.DELETED, unified_diff(key, live[key], None), "would delete")
                )
            return set()
        keep = await self._delete(previous, plan.delete, live, result, options.diffs)
        if plan.delete:
            progress(f"pruned {len(plan.delete) - len(keep)} objects")
        return keep

    async def _read(
        self, previous: Inventory, keys: list[ObjectKey], concurrency: int
    ) -> dict[ObjectKey, Body | None]:
        semaphore = asyncio.Semaphore(min(concurrency, READ_CONCURRENCY))

        async def one(key: ObjectKey) -> Body | None:
            entry = previous.entries[key]
            async with semaphore:
                try:
                    return await self.client.get(entry.api_version, key.kind, key.namespace, key.name)
                except NoMatchError:
                    return None

        lives = await asyncio.gather(*(one(key) for key in keys))
        return dict(zip(keys, lives, strict=True))

    async def _delete(
        self,
        previous: Inventory,
        keys: list[ObjectKey],
        live: dict[ObjectKey, Body | None],
        result: SyncResult,
        diffs: bool = True,
    ) -> set[ObjectKey]:
        keep: set[ObjectKey] = set()
        for key in keys:
            entry = previous.entries[key]
            body = live[key] or {}
            uid = str((body.get("metadata") or {}).get("uid") or "")
            try:
                await self.client.delete(entry.api_version, key.kind, key.namespace, key.name, uid=uid)
            except (NotFoundError, NoMatchError):
                pass
            except KubeError as exc:
                keep.add(key)
                result.changeset.add(
                    ChangeSetEntry(key, Action.FAILED, message=f"prune failed: {exc.api_message}")
                )
                continue
            diff = unified_diff(key, body, None) if diffs else ""
            result.changeset.add(ChangeSetEntry(key, Action.DELETED, diff))
        return keep
