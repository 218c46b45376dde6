"""Drift detection: is every desired field present, with an equal value, in the live object?"""

from __future__ import annotations

import base64
from typing import Any

from reconciler.plan.compare import drift, parse_quantity


def deployment(image: str = "app:1", cpu: str = "500m", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "api", "image": image, "resources": {"requests": {"cpu": cpu}}, **extra}
                    ]
                }
            }
        },
    }


def live_of(desired: dict[str, Any]) -> dict[str, Any]:
    live = deployment()
    live["metadata"].update({"uid": "u", "resourceVersion": "9", "labels": {"app": "api", "extra": "x"}})
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"})
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "mesh:1"})
    live["spec"]["replicas"] = 4
    live["status"] = {"replicas": 4}
    return live


def test_defaults_status_and_other_managers_fields_are_not_drift() -> None:
    """Fields only in live (defaults, a sidecar injected by a webhook, status) do not count."""
    assert drift(deployment(), live_of(deployment())) == []


def test_a_changed_image_is_drift_with_its_path() -> None:
    """A desired value that differs in live is reported with a readable path."""
    live = live_of(deployment())
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "app:hacked"
    assert drift(deployment(), live) == [".spec.template.spec.containers[name=api].image"]


def test_quantities_compare_by_value() -> None:
    """500m equals 0.5 and 1Gi equals 1024Mi."""
    assert drift(deployment(cpu="0.5"), live_of(deployment())) == []
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert parse_quantity("abc") is None


def test_a_removed_label_is_drift() -> None:
    """Labels we declare must be present."""
    live = live_of(deployment())
    del live["metadata"]["labels"]["app"]
    assert drift(deployment(), live) == [".metadata.labels.app"]


def test_empty_desired_values_match_absent_live_fields() -> None:
    """The API server drops empty maps; that is not drift."""
    assert drift(deployment(securityContext={}), live_of(deployment())) == []


def test_secret_string_data_compares_as_base64_data() -> None:
    """stringData is compared as the data the server stores."""
    desired = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    live = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"k": base64.b64encode(b"v").decode()},
    }
    assert drift(desired, live) == []
    live["data"]["k"] = base64.b64encode(b"other").decode()
    assert drift(desired, live) == [".data.k"]


def test_atomic_lists_must_match_exactly() -> None:
    """A list of scalars (args) must have the same items in the same order."""
    desired = deployment(args=["--a", "--b"])
    live = live_of(desired)
    live["spec"]["template"]["spec"]["containers"][0]["args"] = ["--a"]
    assert drift(desired, live) == [".spec.template.spec.containers[name=api].args"]


def test_bool_is_not_an_int() -> None:
    """true and 1 are different values."""
    desired = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}, "spec": {"flag": True}}
    assert drift(desired, {**desired, "spec": {"flag": 1}}) == [".spec.flag"]
