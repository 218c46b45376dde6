"""Redacted diffs, the drift fight guard, the inventory format and manifest parsing."""

from __future__ import annotations

import base64

import pytest

from reconciler.drift import FightGuard, other_managers
from reconciler.inventory import Inventory, InventoryEntry
from reconciler.objects import ObjectKey
from reconciler.plan.diff import redact, unified_diff
from reconciler.render.kustomize import RenderError, parse_manifests

CANARY = "CANARY-do-not-print-7f3a"


def secret(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "a"},
        "data": {"password": base64.b64encode(value.encode()).decode()},
        "stringData": {"token": value},
    }


def test_secret_values_never_appear_in_diffs() -> None:
    """The diff of a changed Secret shows that it changed, by fingerprint, without either value."""
    text = unified_diff(ObjectKey("", "Secret", "a", "s"), secret(CANARY), secret(CANARY + "-new"))
    assert text
    assert CANARY not in text
    assert base64.b64encode(CANARY.encode()).decode() not in text
    assert "<redacted sha256:" in text


def test_redaction_keeps_other_kinds_intact() -> None:
    """Only Secrets are redacted."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    assert redact(config_map) == config_map


def test_fight_guard_allows_a_burst_then_stops_until_the_window_passes() -> None:
    """Five corrections in the window are allowed, the sixth is refused, and the window slides."""
    now = [0.0]
    guard = FightGuard(max_corrections=5, window=60, clock=lambda: now[0])
    key = ObjectKey("apps", "Deployment", "a", "api")
    assert all(guard.allow(key) for _ in range(5))
    assert not guard.allow(key)
    assert guard.fighting(key)
    now[0] = 61
    assert guard.allow(key)
    assert not guard.fighting(key)


def test_other_managers_lists_the_most_recent_first() -> None:
    """The fight report names the other writers, newest first."""
    live = {
        "metadata": {
            "managedFields": [
                {"manager": "reconciler", "time": "2026-01-01T00:00:03Z"},
                {"manager": "kubectl-edit", "time": "2026-01-01T00:00:02Z"},
                {"manager": "hpa", "time": "2026-01-01T00:00:05Z"},
            ]
        }
    }
    assert other_managers(live, "reconciler") == ["hpa", "kubectl-edit"]


def test_inventory_round_trips_through_json() -> None:
    """What is saved is what is loaded."""
    key = ObjectKey("apps", "Deployment", "a", "api")
    inventory = Inventory.of([InventoryEntry("apps/v1", key, "abc")], revision="r1")
    loaded = Inventory.from_json(inventory.to_json())
    assert loaded.entries == inventory.entries
    assert loaded.revision == "r1"


def test_parse_names_both_documents_of_a_duplicate() -> None:
    """The same object twice is an error naming it and both document numbers."""
    document = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
    text = document + "---\n" + document
    with pytest.raises(RenderError, match=r"ConfigMap/a appears twice \(documents 1 and 2\)"):
        parse_manifests(text, "env")


def test_parse_refuses_documents_without_identity() -> None:
    """A document without kind or name is an error saying what is missing."""
    with pytest.raises(RenderError, match="document 1 has no kind"):
        parse_manifests("apiVersion: v1\nmetadata: {name: a}\n", "env")


def test_parse_flattens_lists() -> None:
    """kind: List items become separate manifests."""
    text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
    assert [m.key.name for m in parse_manifests(text, "env")] == ["a"]
