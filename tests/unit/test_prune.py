"""Prune safety: ownership marks, protected kinds, opt-outs and the circuit breaker."""

from __future__ import annotations

from typing import Any

from reconciler.objects import ObjectKey
from reconciler.plan.prune import PruneOptions, plan_prune

ENV = "staging"


def live(kind: str = "ConfigMap", env: str = ENV, labels: bool = True, **metadata: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", **metadata}
    if labels:
        meta["labels"] = {"app.kubernetes.io/managed-by": "reconciler"}
    meta.setdefault("annotations", {})["reconciler.dev/environment"] = env
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def key(name: str, kind: str = "ConfigMap", namespace: str = "a") -> ObjectKey:
    return ObjectKey("", kind, namespace, name)


def test_only_owned_objects_that_left_git_are_deleted() -> None:
    """Previous inventory minus desired, restricted to objects with both ownership marks for this env."""
    previous = [key(f"c{i}") for i in range(10)]
    desired = previous[:8]
    lives = {previous[8]: live(), previous[9]: live(env="production")}
    plan = plan_prune(previous, desired, lives, ENV, PruneOptions())
    assert plan.delete == [previous[8]]
    assert "not owned" in plan.kept[previous[9]]


def test_owner_references_prune_annotation_and_protected_kinds_are_kept() -> None:
    """ownerReferences, reconciler.dev/prune: disabled, Namespaces and PVCs are never deleted by default."""
    previous = [key(f"c{i}") for i in range(10)] + [
        key("ns", "Namespace", ""),
        key("data", "PersistentVolumeClaim"),
    ]
    desired = previous[:7]
    lives = {
        previous[7]: live(ownerReferences=[{"kind": "X", "name": "y"}]),
        previous[8]: live(annotations={"reconciler.dev/prune": "disabled"}),
        previous[9]: live(),
        previous[10]: live("Namespace"),
        previous[11]: live("PersistentVolumeClaim"),
    }
    plan = plan_prune(previous, desired, lives, ENV, PruneOptions())
    assert plan.delete == [previous[9]]
    assert set(plan.kept) == {previous[7], previous[8], previous[10], previous[11]}
    opted_in = {**lives, previous[10]: live("Namespace", annotations={"reconciler.dev/prune": "enabled"})}
    assert previous[10] in plan_prune(previous, desired, opted_in, ENV, PruneOptions()).delete


def test_gone_objects_are_not_deleted_again() -> None:
    """Objects that no longer exist are reported gone, not deleted."""
    previous = [key("a"), key("b"), key("c")]
    plan = plan_prune(previous, previous[:2], {previous[2]: None}, ENV, PruneOptions())
    assert plan.gone == [previous[2]]
    assert plan.delete == []


def test_empty_render_trips_the_circuit_breaker() -> None:
    """An empty render deletes nothing and says why."""
    previous = [key("a"), key("b")]
    plan = plan_prune(previous, [], {k: live() for k in previous}, ENV, PruneOptions())
    assert plan.delete == []
    assert "render is empty" in plan.blocked


def test_mass_deletion_trips_the_circuit_breaker_unless_overridden() -> None:
    """Deleting more than half the inventory is blocked; allow_mass_prune lets it through."""
    previous = [key(f"c{i}") for i in range(10)]
    lives = {k: live() for k in previous}
    blocked = plan_prune(previous, previous[:4], lives, ENV, PruneOptions())
    assert blocked.delete == []
    assert "6 of 10" in blocked.blocked
    allowed = plan_prune(previous, previous[:4], lives, ENV, PruneOptions(allow_mass_prune=True))
    assert len(allowed.delete) == 6
    half = plan_prune(previous, previous[:5], lives, ENV, PruneOptions())
    assert len(half.delete) == 5
    assert not half.blocked


def test_prune_disabled_deletes_nothing() -> None:
    """With pruning off for the environment, the plan is empty."""
    previous = [key("a"), key("b")]
    plan = plan_prune(previous, previous[:1], {previous[1]: live()}, ENV, PruneOptions(enabled=False))
    assert plan.delete == []
