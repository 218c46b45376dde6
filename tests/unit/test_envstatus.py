"""The Environment objects' status: kstatus conditions that keep their transition times, and the status
body built from the daemon's status of an environment."""

from __future__ import annotations

from reconciler.envstatus import changeset_summary, next_conditions, status_body
from reconciler.objects import Action, ChangeSet, ChangeSetEntry, ObjectKey


def by_type(conditions: list[dict[str, object]]) -> dict[str, tuple[object, object]]:
    return {str(c["type"]): (c["status"], c["lastTransitionTime"]) for c in conditions}


def test_exactly_one_condition_is_true() -> None:
    """Ready, Reconciling and Stalled are always all present; the current one is True."""
    conditions = next_conditions([], "Stalled", "RenderFailed", "missing.yaml", "T1")
    assert by_type(conditions) == {
        "Ready": ("False", "T1"),
        "Reconciling": ("False", "T1"),
        "Stalled": ("True", "T1"),
    }
    assert {c["reason"] for c in conditions} == {"RenderFailed"}


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    """Reconciling -> Ready -> Ready: Ready's time is that of the first Ready; Stalled never moved."""
    first = next_conditions([], "Reconciling", "Pending", "", "T1")
    ready = next_conditions(first, "Ready", "Succeeded", "applied", "T2")
    again = next_conditions(ready, "Ready", "Succeeded", "applied again", "T3")
    assert by_type(again) == {
        "Ready": ("True", "T2"),
        "Reconciling": ("False", "T2"),
        "Stalled": ("False", "T1"),
    }
    assert again[0]["message"] == "applied again"


def test_the_status_body_carries_applied_and_attempted_revisions() -> None:
    """revision is the applied one; lastAttemptedRevision the last sync's; generation is observed."""
    conditions = next_conditions([], "Stalled", "RenderFailed", "x", "T1")
    body = status_body(
        {
            "revision": "b" * 40,
            "appliedRevision": "a" * 40,
            "sync": "OutOfSync",
            "health": "Healthy",
            "conditions": conditions,
            "changes": {"created": 0},
            "inventoryObjects": 4,
        },
        generation=3,
    )
    assert body["revision"] == "a" * 40
    assert body["shortRevision"] == "a" * 12
    assert body["lastAttemptedRevision"] == "b" * 40
    assert body["observedGeneration"] == 3
    assert {c["observedGeneration"] for c in body["conditions"]} == {3}
    assert body["inventoryObjects"] == 4


def test_the_changeset_summary_lists_what_changed_without_diffs() -> None:
    """Unchanged objects are only counted; diffs never leave the engine; long lists are capped."""
    changes = ChangeSet()
    for i in range(60):
        changes.add(
            ChangeSetEntry(ObjectKey("", "ConfigMap", "ns", f"c{i}"), Action.CREATED, diff="+secret-ish")
        )
    changes.add(ChangeSetEntry(ObjectKey("", "ConfigMap", "ns", "same"), Action.UNCHANGED))
    summary = changeset_summary(changes, limit=50)
    assert summary["summary"] == "60 created, 1 unchanged"
    assert len(summary["objects"]) == 50
    assert summary["omitted"] == 10
    assert summary["objects"][0] == {"object": "ConfigMap/ns/c0", "action": "created"}
    assert "diff" not in str(summary)


def test_an_unknown_changes_map_is_left_out_not_written_empty() -> None:
    """Server-side apply turns an empty map whose keys the manager owned into null, which the schema
    refuses (``status.changes: Invalid value: "null"``): no changes known means no field."""
    body = status_body({"revision": "a" * 40, "conditions": [], "changes": {}}, generation=1)
    assert "changes" not in body
    assert "changes" not in status_body({"revision": "a" * 40}, generation=1)
    assert status_body({"changes": {"created": 0}}, generation=1)["changes"] == {"created": 0}


def test_the_last_applied_change_is_carried_with_only_its_known_fields() -> None:
    """lastAppliedChange keeps revision, time and summary; empty fields are left out (the time is a
    date-time in the schema)."""
    change = {"revision": "c" * 40, "time": "2026-01-01T00:00:00Z", "summary": "1 configured, 8 unchanged"}
    assert status_body({"lastAppliedChange": change}, generation=1)["lastAppliedChange"] == change
    partial = status_body({"lastAppliedChange": {"revision": "c" * 40, "time": ""}}, generation=1)
    assert partial["lastAppliedChange"] == {"revision": "c" * 40}
    assert "lastAppliedChange" not in status_body({}, generation=1)
