"""The daemon's metrics: derived from sync results, one-hot state gauges, one revision series per
environment, and every metric documented in docs/metrics.md."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from reconciler.health import HealthStatus
from reconciler.metrics import Metrics
from reconciler.objects import Action, ChangeSetEntry, ObjectKey
from reconciler.sync import SyncResult

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def result(revision: str, *, ok: bool = True, prune_blocked: str = "") -> SyncResult:
    synced = ok and not prune_blocked
    outcome = SyncResult("shop", revision, health=HealthStatus.HEALTHY if ok else HealthStatus.UNKNOWN)
    outcome.synced = synced
    if prune_blocked:
        outcome.condition, outcome.reason, outcome.prune_blocked = "Stalled", "PruneBlocked", prune_blocked
    elif ok:
        outcome.condition, outcome.reason = "Ready", "Succeeded"
    else:
        outcome.condition, outcome.reason = "Stalled", "RenderFailed"
    outcome.durations = {
        "render": 0.2,
        "plan": 0.01,
        "apply": 0.3,
        "health": 1.0,
        "prune": 0.0,
        "stage x": 9.0,
    }
    outcome.inventory_size = 3 if ok else None
    cm = ObjectKey("", "ConfigMap", "ns", "a")
    outcome.changeset.add(ChangeSetEntry(cm, Action.CREATED))
    outcome.changeset.add(ChangeSetEntry(ObjectKey("apps", "Deployment", "ns", "b"), Action.UNCHANGED))
    return outcome


def test_a_new_environment_is_unknown_and_reconciling() -> None:
    """Before its first sync an environment reports Unknown / Reconciling and no revision."""
    metrics = Metrics()
    metrics.environment_known("shop")
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="Unknown") == 1
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="Synced") == 0
    assert (
        sample(metrics, "reconciler_environment_condition", environment="shop", condition="Reconciling") == 1
    )
    assert "reconciler_environment_revision_info{" not in generate_latest(metrics.registry).decode()


def test_a_sync_result_sets_status_stages_objects_and_inventory() -> None:
    """One result updates every environment metric; only the known stages are observed."""
    metrics = Metrics()
    metrics.synced(result("a" * 40), 1.5)
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="Synced") == 1
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="OutOfSync") == 0
    assert sample(metrics, "reconciler_environment_health_status", environment="shop", status="Healthy") == 1
    assert sample(metrics, "reconciler_syncs_total", environment="shop", result="Succeeded") == 1
    assert sample(metrics, "reconciler_sync_duration_seconds_sum", environment="shop") == 1.5
    assert (
        sample(metrics, "reconciler_sync_stage_duration_seconds_count", environment="shop", stage="apply")
        == 1
    )
    assert (
        sample(metrics, "reconciler_sync_stage_duration_seconds_count", environment="shop", stage="validate")
        is None
    )
    assert "stage x" not in generate_latest(metrics.registry).decode()
    assert (
        sample(
            metrics, "reconciler_sync_objects_total", environment="shop", action="created", kind="ConfigMap"
        )
        == 1
    )
    assert (
        sample(
            metrics,
            "reconciler_sync_objects_total",
            environment="shop",
            action="unchanged",
            kind="Deployment",
        )
        == 1
    )
    assert sample(metrics, "reconciler_environment_inventory_objects", environment="shop") == 3
    assert (
        sample(metrics, "reconciler_environment_last_sync_success_timestamp_seconds", environment="shop") or 0
    ) > 0


def test_a_failed_render_is_out_of_sync_and_stalled_and_keeps_the_inventory_size() -> None:
    """A failed sync flips the one-hot gauges; the inventory gauge is left as it was."""
    metrics = Metrics()
    metrics.synced(result("a" * 40), 1.0)
    metrics.synced(result("b" * 40, ok=False), 0.1)
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="OutOfSync") == 1
    assert sample(metrics, "reconciler_environment_sync_status", environment="shop", status="Synced") == 0
    assert sample(metrics, "reconciler_environment_condition", environment="shop", condition="Stalled") == 1
    assert sample(metrics, "reconciler_syncs_total", environment="shop", result="RenderFailed") == 1
    assert sample(metrics, "reconciler_environment_inventory_objects", environment="shop") == 3


def test_a_blocked_prune_is_counted_and_flagged_until_a_sync_prunes_again() -> None:
    """The breaker's gauge is 1 while blocked and back to 0 after; the counter keeps the history."""
    metrics = Metrics()
    metrics.synced(result("a" * 40, prune_blocked="would delete 4 of 5 objects"), 1.0)
    assert sample(metrics, "reconciler_environment_prune_blocked", environment="shop") == 1
    metrics.synced(result("b" * 40), 1.0)
    assert sample(metrics, "reconciler_environment_prune_blocked", environment="shop") == 0
    assert sample(metrics, "reconciler_prune_blocked_total", environment="shop") == 1


def test_the_revision_info_keeps_one_series_per_environment() -> None:
    """A new revision replaces the old series; losing leadership removes it."""
    metrics = Metrics()
    metrics.applied_revision("shop", "a" * 40)
    metrics.applied_revision("shop", "b" * 40)
    text = generate_latest(metrics.registry).decode()
    assert text.count("reconciler_environment_revision_info{") == 1
    assert sample(metrics, "reconciler_environment_revision_info", environment="shop", revision="b" * 40) == 1
    metrics.environment_known("shop")
    assert "reconciler_environment_revision_info{" not in generate_latest(metrics.registry).decode()


def test_drift_outcomes_are_counted_by_kind() -> None:
    """Corrections, failures and fights each have their series."""
    metrics = Metrics()
    key = ObjectKey("apps", "Deployment", "ns", "api")
    metrics.drift("shop", ChangeSetEntry(key, Action.CONFIGURED, message="drift corrected"))
    metrics.drift("shop", ChangeSetEntry(key, Action.FAILED, message="drift correction failed"))
    metrics.drift("shop", ChangeSetEntry(key, Action.SKIPPED, message="fighting"))
    labels = {"environment": "shop", "kind": "Deployment"}
    assert sample(metrics, "reconciler_drift_corrections_total", **labels, result="corrected") == 1
    assert sample(metrics, "reconciler_drift_corrections_total", **labels, result="failed") == 1
    assert sample(metrics, "reconciler_drift_fights_total", **labels) == 1


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    """docs/metrics.md lists exactly the registry's metrics (promotion metrics are the promotion
    package's, in their own section), with the right type."""
    metrics = Metrics()
    metrics.count_requests_of({})
    exported: dict[str, str] = {}
    for family in metrics.registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        exported[family.name + suffix] = "gauge" if family.type == "info" else family.type
    text = DOCS.read_text()
    own = text.split("## Promotion metrics")[0]
    documented = dict(re.findall(r"^\| `(reconciler_[a-z0-9_]+)` \| (\w+) \|", own, re.MULTILINE))
    assert documented == exported


def test_sharding_metrics_are_documented_in_their_own_section() -> None:
    """The metrics a sharded daemon adds (``daemon_parts.shard``) are exactly those docs/metrics.md lists
    under "Sharding metrics", with the right type."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from reconciler.daemon_parts.shard import ShardMetrics  # noqa: PLC0415

    registry = CollectorRegistry()
    ShardMetrics(registry)
    exported = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in registry.collect()
    }
    section = DOCS.read_text().split("## Sharding metrics")[1].split("\n## ")[0]
    documented = dict(re.findall(r"^\| `(reconciler_[a-z0-9_]+)` \| (\w+) \|", section, re.MULTILINE))
    assert documented == exported
