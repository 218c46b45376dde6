"""What one environment may change: its access policy, checked on the plan before any write.

The environments repository is untrusted input: any writer of any overlay may be hostile. So what an
environment may touch is set in the daemon's configuration (trusted), never in Git, and checked here,
on the rendered objects, before the first request that writes (dry-runs included):

* **reserved** (always, whatever the policy says): objects in the daemon's own namespaces (its
  inventories, Environment and Promotion objects, Lease, configuration and Secrets live there), the
  Namespace objects of those namespaces, every kind of reconciler's own API group ``reconciler.dev``,
  and the CustomResourceDefinitions of that group. No environment can rewrite the daemon.
* **namespace**: a namespaced object must be in an allowed namespace: one matching the environment's
  ``namespaces`` globs, or, when none are configured, one that the environment's own render creates
  (a Namespace object it declares that does not exist yet or that it already manages; never
  ``default`` or ``kube-*``).
* **cluster-scoped**: a cluster-scoped kind must be listed in ``cluster_scoped`` (``Kind``,
  ``group/Kind`` or ``*``); a Namespace object is allowed when its name is an allowed namespace.

A violation refuses the whole revision: ``check`` returns every offending object with the rule it broke,
and the engine stops before any write and before any prune. Impersonation (``service_account``) is the
second, independent wall: the API server then refuses what the cluster's RBAC does not grant.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.objects import ObjectKey

RECONCILER_GROUP = "reconciler.dev"
# namespaces that no render "creates": they exist in every cluster and belong to its administrators
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class AccessPolicy:
    """What one environment may change (from the daemon's configuration, never from Git).

    ``namespaces`` None means "the namespaces its own render creates"; ``unrestricted`` (the one-shot
    CLI, run with an operator's own credentials) skips the namespace and cluster-scoped rules, never the
    reserved ones.
    """

    namespaces: tuple[str, ...] | None = None
    cluster_scoped: tuple[str, ...] = ()
    reserved_namespaces: frozenset[str] = frozenset({"reconciler-system"})
    unrestricted: bool = False

    def allows_namespace(self, namespace: str, own: set[str]) -> bool:
        """True when objects may be written in ``namespace`` (``own``: what the render creates)."""
        if namespace in self.reserved_namespaces:
            return False
        if self.unrestricted:
            return True
        if self.namespaces is None:
            return namespace in own
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    def allows_cluster_kind(self, key: ObjectKey) -> bool:
        """True when the cluster-scoped kind of ``key`` is listed in ``cluster_scoped``."""
        if self.unrestricted:
            return True
        for entry in self.cluster_scoped:
            if entry in ("*", key.kind):
                return True
            group, _, kind = entry.rpartition("/")
            if kind == key.kind and group == key.group:
                return True
        return False

    def describe(self) -> str:
        """The policy in one phrase, for error messages."""
        if self.unrestricted:
            return "unrestricted"
        namespaces = (
            "the namespaces its render creates"
            if self.namespaces is None
            else "namespaces " + ", ".join(self.namespaces)
        )
        kinds = ", ".join(self.cluster_scoped) or "none"
        return f"{namespaces}; cluster-scoped kinds: {kinds}"


@dataclass(frozen=True, order=True)
class Violation:
    """One object the policy does not allow, and the rule it broke."""

    key: ObjectKey
    rule: str  # reserved | namespace | cluster-scoped
    message: str


@dataclass(frozen=True)
class Target:
    """One rendered object as the policy sees it: its key and scope (None when the cluster does not
    know the kind yet and the render brings no CRD for it)."""

    key: ObjectKey
    namespaced: bool | None


def own_namespaces(declared: Iterable[str], foreign: Iterable[str], policy: AccessPolicy) -> set[str]:
    """The namespaces a render may use by default: the Namespace objects it declares, minus system and
    reserved namespaces and minus ``foreign`` ones (existing namespaces it does not manage)."""
    excluded = SYSTEM_NAMESPACES | policy.reserved_namespaces | set(foreign)
    return {name for name in declared if name not in excluded and not name.startswith("kube-")}


def reserved_reason(target: Target, policy: AccessPolicy) -> str:
    """Why ``target`` belongs to the daemon and to no environment ("" when it does not)."""
    key = target.key
    if key.group == RECONCILER_GROUP:
        return f"{key.group_kind} is reconciler's own kind; no environment may write it"
    if key.kind == "CustomResourceDefinition" and key.name.endswith("." + RECONCILER_GROUP):
        return "reconciler's own CustomResourceDefinitions belong to no environment"
    if key.kind == "Namespace" and key.group == "" and key.name in policy.reserved_namespaces:
        return f"namespace {key.name!r} is the daemon's own; no environment may write it"
    if target.namespaced is not False and key.namespace in policy.reserved_namespaces:
        return f"namespace {key.namespace!r} is the daemon's own; no environment may write in it"
    return ""


def check(targets: Iterable[Target], policy: AccessPolicy, own: set[str]) -> list[Violation]:
    """Every target the policy does not allow, sorted; empty when the whole render may be applied."""
    violations: list[Violation] = []
    for target in targets:
        key = target.key
        reserved = reserved_reason(target, policy)
        if reserved:
            violations.append(Violation(key, "reserved", reserved))
            continue
        if key.kind == "Namespace" and key.group == "":
            if not policy.allows_namespace(key.name, own) and not policy.allows_cluster_kind(key):
                violations.append(
                    Violation(key, "namespace", f"namespace {key.name!r} is not allowed to this environment")
                )
            continue
        if target.namespaced is not False:
            if not key.namespace:
                if target.namespaced:
                    violations.append(
                        Violation(key, "namespace", "has no namespace (set metadata.namespace)")
                    )
                    continue
            elif not policy.allows_namespace(key.namespace, own):
                violations.append(
                    Violation(
                        key, "namespace", f"namespace {key.namespace!r} is not allowed to this environment"
                    )
                )
                continue
        if target.namespaced is not True and not policy.allows_cluster_kind(key):
            violations.append(
                Violation(
                    key,
                    "cluster-scoped",
                    f"cluster-scoped kind {key.group_kind} is not allowed to this environment",
                )
            )
    return sorted(violations)


def message(violations: list[Violation], policy: AccessPolicy, limit: int = 50) -> str:
    """One error naming every offending object (up to ``limit``) with its rule, and what to do."""
    shown = "; ".join(f"{v.key}: {v.message} [{v.rule}]" for v in violations[:limit])
    more = f" (and {len(violations) - limit} more)" if len(violations) > limit else ""
    return (
        f"{len(violations)} object(s) outside this environment's policy, nothing was written and nothing "
        f"pruned: {shown}{more}. The policy ({policy.describe()}) is set in the daemon's configuration "
        "(environments[].namespaces, cluster_scoped), not in the repository."
    )
