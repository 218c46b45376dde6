"""Events about environments: what a sync or a drift correction says, and the correlator that keeps a
loop from flooding the API server (repeats become counts, then a per-object rate limit drops the rest)."""

from __future__ import annotations

from reconciler.events import Correlator, EventNote, InvolvedObject, drift_event, sync_events
from reconciler.health import HealthStatus
from reconciler.objects import Action, ChangeSetEntry, ObjectKey
from reconciler.sync import SyncResult

ENV = InvolvedObject("reconciler.dev/v1alpha1", "Environment", "reconciler-system", "shop", "uid-1")
CM = ObjectKey("", "ConfigMap", "shop", "settings")


def finished(*entries: ChangeSetEntry, condition: str = "Ready", reason: str = "Succeeded") -> SyncResult:
    result = SyncResult("shop", "0123456789abcdef" * 2 + "01234567", health=HealthStatus.HEALTHY)
    result.condition, result.reason, result.synced = condition, reason, condition == "Ready"
    for entry in entries:
        result.changeset.add(entry)
    return result


def test_a_no_op_resync_of_a_ready_environment_says_nothing() -> None:
    """Unchanged objects and an unchanged condition: no Event."""
    assert sync_events(finished(ChangeSetEntry(CM, Action.UNCHANGED)), "Ready") == []


def test_a_sync_that_writes_and_prunes_says_applied_pruned_and_synced() -> None:
    """Applied names the objects and counts; Pruned names what left; Synced closes the story."""
    old = ObjectKey("", "ConfigMap", "shop", "old")
    notes = sync_events(
        finished(ChangeSetEntry(CM, Action.CREATED), ChangeSetEntry(old, Action.DELETED)), "Reconciling"
    )
    assert [(n.type, n.reason) for n in notes] == [
        ("Normal", "Applied"),
        ("Normal", "Pruned"),
        ("Normal", "Synced"),
    ]
    assert notes[0].message == "revision 0123456789ab: 1 created: ConfigMap/shop/settings"
    assert "ConfigMap/shop/old" in notes[1].message


def test_failures_and_blocked_prunes_are_warnings_named_by_their_reason() -> None:
    """A Stalled sync is a Warning with the status reason; a blocked prune is PruneBlocked."""
    failed = finished(condition="Stalled", reason="RenderFailed")
    failed.message = "render of apps/staging refused: missing.yaml does not exist"
    assert sync_events(failed, "Ready") == [
        EventNote(
            "Warning",
            "RenderFailed",
            "revision 0123456789ab: render of apps/staging refused: missing.yaml does not exist",
        )
    ]
    blocked = finished(condition="Stalled", reason="PruneBlocked")
    blocked.prune_blocked = "would delete 9 of 10 objects (more than 50%)"
    assert [(n.type, n.reason) for n in sync_events(blocked, "Ready")] == [("Warning", "PruneBlocked")]


def test_drift_outcomes_map_to_their_events() -> None:
    """Corrected is Normal; a fight and a failed correction are Warnings."""
    assert drift_event(ChangeSetEntry(CM, Action.CONFIGURED, message="drift corrected: .data.x")).reason == (
        "DriftCorrected"
    )
    assert drift_event(ChangeSetEntry(CM, Action.SKIPPED, message="fighting")).type == "Warning"
    assert drift_event(ChangeSetEntry(CM, Action.FAILED, message="failed")).reason == "DriftCorrectionFailed"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_event_becomes_a_count_on_the_first_one() -> None:
    """The same object, type, reason and message within the window: aggregated onto one Event."""
    clock = Clock()
    correlator = Correlator(clock=clock)
    note = EventNote("Warning", "RenderFailed", "revision abc: refused")
    first = correlator.decide(ENV, note)
    clock.now += 30
    second = correlator.decide(ENV, note)
    assert first.outcome == "created"
    assert (second.outcome, second.name, second.count, second.first) == (
        "aggregated",
        first.name,
        2,
        first.first,
    )
    other = correlator.decide(ENV, EventNote("Warning", "RenderFailed", "revision def: refused"))
    assert other.outcome == "created"
    assert other.name != first.name
    clock.now += 601
    assert correlator.decide(ENV, note).outcome == "created"  # the window has passed


def test_a_loop_is_throttled_per_object_and_recovers_with_time() -> None:
    """A burst is let through, then one event per refill interval; other objects are unaffected."""
    clock = Clock()
    correlator = Correlator(burst=5, refill=10, clock=clock)
    outcomes = [
        correlator.decide(ENV, EventNote("Normal", "DriftCorrected", f"change {i}")).outcome
        for i in range(50)
    ]
    assert outcomes.count("created") == 5
    assert outcomes.count("throttled") == 45
    other = InvolvedObject(ENV.api_version, ENV.kind, ENV.namespace, "other")
    assert correlator.decide(other, EventNote("Normal", "Applied", "x")).outcome == "created"
    clock.now += 10
    assert correlator.decide(ENV, EventNote("Normal", "DriftCorrected", "later")).outcome == "created"
    assert correlator.decide(ENV, EventNote("Normal", "DriftCorrected", "later 2")).outcome == "throttled"
