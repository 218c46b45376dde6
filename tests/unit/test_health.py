"""Health: one YAML fixture per kind and state under tests/fixtures/health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.health import Health, HealthStatus, aggregate, assess

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "health").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_health_of_fixture(fixture: Path) -> None:
    """Each fixture's object assesses to the status (and message, when given) the fixture expects."""
    case = _load(fixture)
    health = assess(case["object"])
    assert health.status == HealthStatus(case["expected"]), health.message
    if "message" in case:
        assert health.message == case["message"]


def test_every_kind_in_the_contract_has_a_fixture() -> None:
    """The kinds the health contract names are each covered by at least one fixture."""
    kinds = {_load(f)["object"]["kind"] for f in FIXTURES}
    required = {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Pod",
        "PersistentVolumeClaim",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "CustomResourceDefinition",
        "Namespace",
        "APIService",
    }
    assert required <= kinds


def test_missing_object_is_missing() -> None:
    """No live object means Missing."""
    assert assess(None).status == HealthStatus.MISSING


def test_object_being_deleted_is_progressing() -> None:
    """A deletionTimestamp wins over whatever the status says."""
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"},
    }
    assert assess(obj).status == HealthStatus.PROGRESSING


def test_aggregate_takes_the_worst() -> None:
    """Degraded beats Missing beats Progressing beats Healthy."""
    healths = [Health(HealthStatus.HEALTHY), Health(HealthStatus.PROGRESSING), Health(HealthStatus.DEGRADED)]
    assert aggregate(healths) == HealthStatus.DEGRADED
    assert aggregate([Health(HealthStatus.HEALTHY), Health(HealthStatus.MISSING)]) == HealthStatus.MISSING
    assert aggregate([]) == HealthStatus.HEALTHY


def test_unreadable_status_is_unknown() -> None:
    """A status of the wrong shape is Unknown with a reason, never an exception."""
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "generation": "two"},
        "status": {"observedGeneration": 1},
    }
    health = assess(obj)
    assert health.status == HealthStatus.UNKNOWN
    assert "could not be read" in health.message
