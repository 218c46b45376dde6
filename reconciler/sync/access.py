"""The access-policy stage: every rendered object inside the environment's policy, or the revision is
refused before any request that writes (``reconciler.tenancy`` holds the rules; this reads what they
need: each kind's scope from discovery, and the Namespaces the render declares)."""

from __future__ import annotations

from dataclasses import replace

from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import NoMatchError
from reconciler.objects import Body, ObjectKey, environment_mark
from reconciler.sync.outcome import PolicyViolationError, SyncOptions
from reconciler.sync.planned import Planned
from reconciler.tenancy import AccessPolicy, Target, own_namespaces
from reconciler.tenancy import check as check_policy


def effective_policy(options: SyncOptions, inventory_namespace: str) -> AccessPolicy:
    """The options' access policy, with the inventory's namespace reserved too."""
    policy = options.policy
    if inventory_namespace in policy.reserved_namespaces:
        return policy
    return replace(policy, reserved_namespaces=policy.reserved_namespaces | {inventory_namespace})


class AccessCheck:
    """Refuses a revision with any object outside its environment's policy (reads only)."""

    def __init__(self, client: KubeClient, cache: LiveCache | None) -> None:
        self.client = client
        self.cache = cache

    async def check(self, objects: Planned, options: SyncOptions, inventory_namespace: str) -> None:
        """Raise ``PolicyViolationError`` naming every object outside the policy."""
        policy = effective_policy(options, inventory_namespace)
        targets = [Target(key, await self._scope(objects, key)) for key in objects]
        declared = [key.name for key in objects if key.kind == "Namespace" and key.group == ""]
        foreign: set[str] = set()
        if policy.namespaces is None and not policy.unrestricted:
            for name in declared:
                live = await self._live_namespace(name)
                if live is not None and environment_mark(live) != options.environment:
                    foreign.add(name)  # exists, and this environment does not manage it
        violations = check_policy(targets, policy, own_namespaces(declared, foreign, policy))
        if violations:
            raise PolicyViolationError(violations, policy)

    async def _scope(self, objects: Planned, key: ObjectKey) -> bool | None:
        """Namespaced or not, from discovery, or from a CRD of the same render (None: unknown)."""
        try:
            return (await self.client.resource(objects[key].manifest.api_version, key.kind)).namespaced
        except NoMatchError:
            for planned in objects.values():
                spec = planned.manifest.body.get("spec") or {}
                if (
                    planned.key.kind == "CustomResourceDefinition"
                    and spec.get("group") == key.group
                    and (spec.get("names") or {}).get("kind") == key.kind
                ):
                    return spec.get("scope") != "Cluster"
            return None

    async def _live_namespace(self, name: str) -> Body | None:
        key = ObjectKey("", "Namespace", "", name)
        if self.cache is not None and self.cache.watching(key):
            cached = self.cache.get(key)
            if cached is not None:  # the cache holds only what we manage: an absent one may still exist
                return cached
        return await self.client.get("v1", "Namespace", "", name)
