"""HPA safety: replicas of autoscaled workloads are never part of the desired state."""

from __future__ import annotations

from reconciler.objects import Manifest, ObjectKey
from reconciler.plan.hpa import hpa_targets, owns_replicas, release_autoscaled_replicas


def deploy(name: str, replicas: int = 3) -> Manifest:
    return Manifest(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "a"},
            "spec": {"replicas": replicas},
        }
    )


def hpa(target: str) -> Manifest:
    return Manifest(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"{target}-hpa", "namespace": "a"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "minReplicas": 2,
                "maxReplicas": 5,
            },
        }
    )


def test_replicas_are_released_only_for_autoscaled_workloads() -> None:
    """The HPA's target loses spec.replicas; other workloads keep theirs; inputs are not mutated."""
    manifests = [deploy("api"), deploy("worker"), hpa("api")]
    released = {m.key.name: m for m in release_autoscaled_replicas(manifests)}
    assert "replicas" not in released["api"].body["spec"]
    assert released["worker"].body["spec"]["replicas"] == 3
    assert manifests[0].body["spec"]["replicas"] == 3


def test_targets_are_resolved_in_the_hpa_namespace() -> None:
    """scaleTargetRef names a workload in the HPA's own namespace."""
    assert hpa_targets([hpa("api")]) == {
        ObjectKey("apps", "Deployment", "a", "api"): ObjectKey(
            "autoscaling", "HorizontalPodAutoscaler", "a", "api-hpa"
        )
    }


def test_replica_ownership_is_read_from_managed_fields() -> None:
    """owns_replicas looks for f:spec.f:replicas in the manager's managedFields entry."""
    live = {
        "metadata": {
            "managedFields": [
                {"manager": "reconciler", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}},
            ]
        }
    }
    assert owns_replicas(live, "reconciler")
    assert not owns_replicas(live, "kube-controller-manager")
