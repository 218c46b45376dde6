"""Which objects a sync may delete, and the circuit breaker that stops it from deleting by accident.

Prune = previous inventory minus current render, restricted to objects that

* still exist, carry our ownership marks (the ``app.kubernetes.io/managed-by: reconciler`` label *and*
  the ``reconciler.dev/environment`` annotation naming this environment) and are in the inventory
  (an object that merely copies our labels is never in it);
* have no ``ownerReferences`` (their owner's controller deletes them) and no
  ``reconciler.dev/prune: disabled`` annotation;
* are not Namespaces or PersistentVolumeClaims, unless annotated ``reconciler.dev/prune: enabled`` or
  the environment opts in: deleting those deletes data.

The circuit breaker refuses to prune anything when the render is empty or when the deletions exceed a
share of the inventory (default 50%), unless explicitly overridden.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from reconciler.objects import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PRUNE_ANNOTATION,
    Body,
    ObjectKey,
    environment_mark,
)
from reconciler.plan.ordering import prune_order

PROTECTED_KINDS = frozenset({("", "Namespace"), ("", "PersistentVolumeClaim")})


@dataclass(frozen=True)
class PruneOptions:
    """How much a sync is allowed to delete."""

    enabled: bool = True
    max_share: float = 0.5
    allow_mass_prune: bool = False
    prune_protected_kinds: bool = False


@dataclass
class PrunePlan:
    """Objects to delete (in deletion order), objects kept and why, and a circuit-breaker verdict."""

    delete: list[ObjectKey] = field(default_factory=list)
    kept: dict[ObjectKey, str] = field(default_factory=dict)
    gone: list[ObjectKey] = field(default_factory=list)
    blocked: str = ""


def owned_by(live: Body, environment: str) -> bool:
    """True when the live object carries both of our ownership marks for ``environment``."""
    labels = (live.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and environment_mark(live) == environment


def keep_reason(key: ObjectKey, live: Body, environment: str, options: PruneOptions) -> str:
    """Why an object must not be pruned, or "" when it may be."""
    metadata = live.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if not owned_by(live, environment):
        return f"not owned by environment {environment!r} (ownership marks missing or different)"
    if metadata.get("ownerReferences"):
        return "has ownerReferences: its owner manages its lifetime"
    marker = str(annotations.get(PRUNE_ANNOTATION, "")).lower()
    if marker == "disabled":
        return f"annotated {PRUNE_ANNOTATION}: disabled"
    if (key.group, key.kind) in PROTECTED_KINDS and marker != "enabled" and not options.prune_protected_kinds:
        return f"{key.kind}s are protected from pruning (annotate {PRUNE_ANNOTATION}: enabled to allow it)"
    return ""


def circuit_breaker(previous: int, deletions: int, desired: int, options: PruneOptions) -> str:
    """The reason to refuse pruning altogether, or "" to allow it."""
    if options.allow_mass_prune or deletions == 0:
        return ""
    if desired == 0:
        return (
            f"the render is empty but the inventory holds {previous} objects: refusing to prune anything "
            "(override with allow_mass_prune if the environment really is meant to be emptied)"
        )
    if previous and deletions / previous > options.max_share:
        return (
            f"{deletions} of {previous} inventory objects ({deletions / previous:.0%}) would be deleted, "
            f"more than the {options.max_share:.0%} limit: refusing to prune (override with allow_mass_prune)"
        )
    return ""


def plan_prune(
    previous_inventory: Collection[ObjectKey],
    desired: Collection[ObjectKey],
    live: Mapping[ObjectKey, Body | None],
    environment: str,
    options: PruneOptions,
) -> PrunePlan:
    """Compute the prune plan; ``live`` maps each candidate to its live object, or None if it is gone."""
    result = PrunePlan()
    if not options.enabled:
        return result
    wanted = set(desired)
    candidates = [key for key in previous_inventory if key not in wanted]
    deletable: list[ObjectKey] = []
    for key in candidates:
        body = live.get(key)
        if body is None:
            result.gone.append(key)
            continue
        reason = keep_reason(key, body, environment, options)
        if reason:
            result.kept[key] = reason
        else:
            deletable.append(key)
    result.blocked = circuit_breaker(len(previous_inventory), len(deletable), len(wanted), options)
    if result.blocked:
        for key in deletable:
            result.kept[key] = "prune blocked by the circuit breaker"
        return result
    result.delete = prune_order(deletable)
    return result
