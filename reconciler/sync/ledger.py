"""The inventory's three writes in a sync: previous ∪ desired before the first object write (so a sync
killed at any point never forgets what it may have created), the hashes of what was written (even when
a stage failed), and the final set (desired plus what the prune kept for a retry)."""

from __future__ import annotations

from reconciler.inventory import Inventory, InventoryEntry, InventoryStore
from reconciler.objects import ObjectKey
from reconciler.sync.planned import Planned


async def before(store: InventoryStore, env: str, previous: Inventory, objects: Planned) -> Inventory:
    """Previous ∪ desired, saved before the first write: everything we may create is recorded."""
    merged = previous.merged(
        {
            key: InventoryEntry(p.manifest.api_version, key, "" if p.writes else p.hash)
            for key, p in objects.items()
        }
    )
    merged.revision = previous.revision
    if merged.to_json() != previous.to_json():
        await store.save(env, merged)
    return merged


async def applied(
    store: InventoryStore, env: str, inventory: Inventory, objects: Planned, hashes: dict[ObjectKey, str]
) -> Inventory:
    """The hashes of what was written, saved even when a stage failed."""
    after = inventory.merged(
        {
            key: InventoryEntry(objects[key].manifest.api_version, key, digest)
            for key, digest in hashes.items()
        }
    )
    if hashes and after.to_json() != inventory.to_json():
        await store.save(env, after)
        return after
    return inventory


async def final(
    store: InventoryStore,
    env: str,
    saved_and_previous: tuple[Inventory, Inventory],
    objects: Planned,
    hashes: dict[ObjectKey, str],
    keep: set[ObjectKey],
    revision: str,
) -> int:
    """Desired plus what the prune kept for a retry, saved; its size."""
    saved, previous = saved_and_previous
    result = Inventory.of(
        [InventoryEntry(p.manifest.api_version, key, hashes.get(key, "")) for key, p in objects.items()]
        + [previous.entries[key] for key in keep],
        revision=revision or previous.revision,
    )
    if result.to_json() != saved.to_json():
        await store.save(env, result)
    return len(result.entries)
