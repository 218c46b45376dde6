"""What reconciler applied last time, per environment, stored in the cluster it manages.

The inventory of an environment is a ConfigMap ``reconciler-inventory-<environment>`` in the
``reconciler-system`` namespace (configurable). It lists every object the environment owns, with the
apiVersion needed to delete it and the hash of the manifest last applied, and it survives restarts of
the daemon. The sync writes it twice: before the first write of a sync (previous ∪ desired, so that an
interrupted sync never forgets an object it may have created) and after pruning (desired plus the
objects whose deletion failed or was blocked, so that they are retried).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.kube.client import ApplyOptions, KubeClient
from reconciler.kube.errors import NotFoundError
from reconciler.objects import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObjectKey

DEFAULT_NAMESPACE = "reconciler-system"
INVENTORY_MANAGER = "reconciler-inventory"
_DATA_KEY = "inventory.json"


@dataclass(frozen=True)
class InventoryEntry:
    """One owned object: how to reach it, and the hash of what we last applied ("" if unknown)."""

    api_version: str
    key: ObjectKey
    applied_hash: str = ""


@dataclass
class Inventory:
    """The objects an environment owns, by key."""

    entries: dict[ObjectKey, InventoryEntry] = field(default_factory=dict)
    revision: str = ""

    @property
    def keys(self) -> set[ObjectKey]:
        """Every owned object's key."""
        return set(self.entries)

    def to_json(self) -> str:
        """Stable JSON: entries sorted by key."""
        rows = [
            [e.api_version, e.key.kind, e.key.namespace, e.key.name, e.applied_hash]
            for e in sorted(self.entries.values(), key=lambda e: e.key)
        ]
        return json.dumps({"version": 1, "revision": self.revision, "objects": rows}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        """Inverse of ``to_json``."""
        raw = json.loads(text)
        entries: dict[ObjectKey, InventoryEntry] = {}
        for api_version, kind, namespace, name, applied_hash in raw.get("objects", []):
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            key = ObjectKey(group, kind, namespace, name)
            entries[key] = InventoryEntry(api_version, key, applied_hash)
        return cls(entries, str(raw.get("revision", "")))

    @classmethod
    def of(cls, entries: Iterable[InventoryEntry], revision: str = "") -> Inventory:
        """An inventory of the given entries."""
        return cls({entry.key: entry for entry in entries}, revision)

    def merged(self, other: Mapping[ObjectKey, InventoryEntry]) -> Inventory:
        """This inventory plus ``other`` (``other`` wins on the same key)."""
        return Inventory({**self.entries, **other}, self.revision)


class InventoryStore:
    """Reads and writes inventories as ConfigMaps in the cluster."""

    def __init__(self, client: KubeClient, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace
        self._namespace_ready = False

    @staticmethod
    def name_of(environment: str) -> str:
        """The ConfigMap name for an environment."""
        return f"reconciler-inventory-{environment}"

    async def load(self, environment: str) -> Inventory | None:
        """The stored inventory, or None when the environment never synced."""
        try:
            config_map = await self.client.request(
                "GET",
                f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name_of(environment)}",
                subject=f"ConfigMap/{self.namespace}/{self.name_of(environment)}",
            )
        except NotFoundError:
            return None
        data = (config_map.get("data") or {}).get(_DATA_KEY)
        return Inventory.from_json(data) if data else Inventory()

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        await self.client.ensure_namespace(self.namespace)
        self._namespace_ready = True

    async def save(self, environment: str, inventory: Inventory) -> None:
        """Store the inventory (server-side apply of the ConfigMap)."""
        await self._ensure_namespace()
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name_of(environment),
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "reconciler.dev/inventory": "true"},
                "annotations": {"reconciler.dev/environment": environment},
            },
            "data": {_DATA_KEY: inventory.to_json()},
        }
        await self.client.apply(body, ApplyOptions(field_manager=INVENTORY_MANAGER, force=True))
