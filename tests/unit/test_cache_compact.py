"""Watch-cached objects keep of managedFields only what their readers use: the answers of
``owns_replicas`` (HPA safety), ``other_managers`` (drift fights) and ``comparable`` (dry-run vs live)
are the same before and after, for a fraction of the memory."""

from __future__ import annotations

import copy
import json
from typing import Any

from reconciler.drift import other_managers
from reconciler.kube.cache import compact
from reconciler.plan.hpa import owns_replicas
from reconciler.sync.planned import comparable


def deployment(hpa_owns_replicas: bool) -> dict[str, Any]:
    ours = {
        "f:spec": {
            "f:selector": {},
            "f:template": {"f:spec": {"f:containers": {'k:{"name":"api"}': {"f:image": {}}}}},
        }
    }
    hpa = {"f:spec": {"f:replicas": {}}}
    status = {
        "f:status": {"f:readyReplicas": {}, "f:conditions": {'k:{"type":"Available"}': {"f:status": {}}}}
    }
    entries = [
        {
            "manager": "reconciler",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": ours,
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "time": "2026-01-01T00:00:02Z",
            "fieldsV1": status,
            "subresource": "status",
        },
    ]
    if hpa_owns_replicas:
        entries.append(
            {
                "manager": "hpa-controller",
                "operation": "Update",
                "time": "2026-01-01T00:00:01Z",
                "fieldsV1": hpa,
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop", "resourceVersion": "7", "managedFields": entries},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "api", "image": "x:1"}]}}},
        "status": {"readyReplicas": 3},
    }


def test_compacted_objects_give_the_same_answers_in_less_space() -> None:
    for hpa in (True, False):
        full = deployment(hpa)
        small = compact(copy.deepcopy(full))
        assert owns_replicas(small, "hpa-controller") == owns_replicas(full, "hpa-controller") == hpa
        assert not owns_replicas(small, "reconciler")
        assert other_managers(small, "reconciler") == other_managers(full, "reconciler")
        assert comparable(small) == comparable(full)
        assert small["spec"] == full["spec"]
        assert small["status"] == full["status"]
        assert len(json.dumps(small)) < len(json.dumps(full))


def test_objects_without_managed_fields_are_left_alone() -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}
    assert compact(copy.deepcopy(body)) == body
    odd = {"metadata": {"managedFields": None}}
    assert compact(copy.deepcopy(odd)) == odd
