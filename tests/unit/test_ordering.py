"""Apply order: stages, kind order, waves, tie-breaks, and the prune order."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.objects import Manifest, ObjectKey
from reconciler.plan.ordering import WaveError, apply_order, plan_stages, prune_order


def m(
    kind: str, name: str, namespace: str = "", api_version: str = "v1", wave: str | None = None
) -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if wave is not None:
        metadata["annotations"] = {"reconciler.dev/wave": wave}
    return Manifest({"apiVersion": api_version, "kind": kind, "metadata": metadata})


def names(manifests: list[Manifest]) -> list[str]:
    return [f"{x.key.kind}/{x.key.name}" for x in manifests]


def test_crds_and_namespaces_come_first_then_classes_then_the_rest_then_webhooks() -> None:
    """The four stage families appear in order, each only when it has objects."""
    stages = plan_stages(
        [
            m("ValidatingWebhookConfiguration", "guard", api_version="admissionregistration.k8s.io/v1"),
            m("Deployment", "api", "shop", "apps/v1"),
            m("Widget", "w", "shop", "example.dev/v1"),
            m("StorageClass", "fast", api_version="storage.k8s.io/v1"),
            m("CustomResourceDefinition", "widgets.example.dev", api_version="apiextensions.k8s.io/v1"),
            m("Namespace", "shop"),
        ]
    )
    assert [s.name for s in stages] == [
        "cluster-definitions",
        "cluster-classes",
        "wave 0",
        "admission-webhooks",
    ]
    assert names(list(stages[0].manifests)) == [
        "Namespace/shop",
        "CustomResourceDefinition/widgets.example.dev",
    ]
    assert not stages[1].wait
    assert names(list(stages[2].manifests)) == ["Deployment/api", "Widget/w"]


def test_kind_order_inside_a_stage_follows_the_helm_order_with_unknown_kinds_last() -> None:
    """ServiceAccount before Secret before ConfigMap before Service before Deployment before Ingress."""
    order = apply_order(
        [
            m("Ingress", "web", "a", "networking.k8s.io/v1"),
            m("Widget", "w", "a", "example.dev/v1"),
            m("Deployment", "web", "a", "apps/v1"),
            m("Service", "web", "a"),
            m("ConfigMap", "cfg", "a"),
            m("Secret", "s", "a"),
            m("ServiceAccount", "sa", "a"),
            m("NetworkPolicy", "np", "a", "networking.k8s.io/v1"),
        ]
    )
    assert names(order) == [
        "NetworkPolicy/np",
        "ServiceAccount/sa",
        "Secret/s",
        "ConfigMap/cfg",
        "Service/web",
        "Deployment/web",
        "Ingress/web",
        "Widget/w",
    ]


def test_ties_break_by_namespace_then_name() -> None:
    """Same kind: sorted by namespace, then name, so the order never depends on input order."""
    inputs = [m("ConfigMap", "b", "y"), m("ConfigMap", "a", "y"), m("ConfigMap", "z", "x")]
    assert [(x.key.namespace, x.key.name) for x in apply_order(inputs)] == [
        ("x", "z"),
        ("y", "a"),
        ("y", "b"),
    ]
    assert apply_order(inputs) == apply_order(list(reversed(inputs)))


def test_namespaces_go_one_after_another_each_in_kind_order_cluster_scoped_first() -> None:
    """Every namespace's objects in kind order before the next namespace's, so the first workloads are
    written without waiting for every namespace's configuration; cluster-scoped objects lead."""
    inputs = [
        m(kind, kind.lower(), namespace, "apps/v1" if kind == "Deployment" else "v1")
        for namespace in ("b", "a")
        for kind in ("Deployment", "Service", "ConfigMap", "ServiceAccount")
    ] + [m("ClusterRole", "reader", "", "rbac.authorization.k8s.io/v1")]
    assert [(x.key.namespace, x.key.kind) for x in apply_order(inputs)] == [
        ("", "ClusterRole"),
        ("a", "ServiceAccount"),
        ("a", "ConfigMap"),
        ("a", "Service"),
        ("a", "Deployment"),
        ("b", "ServiceAccount"),
        ("b", "ConfigMap"),
        ("b", "Service"),
        ("b", "Deployment"),
    ]


def test_waves_split_stages_lowest_first() -> None:
    """Objects annotated with a wave go in their own stage; negative waves come before wave 0."""
    stages = plan_stages(
        [
            m("Deployment", "late", "a", "apps/v1", wave="2"),
            m("Service", "early", "a", wave="-1"),
            m("ConfigMap", "default", "a"),
        ]
    )
    assert [s.name for s in stages] == ["wave -1", "wave 0", "wave 2"]


def test_a_non_integer_wave_is_an_error_naming_the_object() -> None:
    """wave: "soon" is refused with the object's key in the message."""
    with pytest.raises(WaveError, match="Deployment/a/x"):
        plan_stages([m("Deployment", "x", "a", "apps/v1", wave="soon")])


def test_prune_order_is_the_reverse_of_the_apply_order() -> None:
    """Webhooks are deleted first, workloads before their Services, Namespaces and CRDs last."""
    keys = [
        ObjectKey("", "Namespace", "", "shop"),
        ObjectKey("apps", "Deployment", "shop", "api"),
        ObjectKey("", "Service", "shop", "api"),
        ObjectKey("apiextensions.k8s.io", "CustomResourceDefinition", "", "w.example.dev"),
        ObjectKey("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", "", "guard"),
    ]
    assert [k.kind for k in prune_order(keys)] == [
        "ValidatingWebhookConfiguration",
        "Deployment",
        "Service",
        "CustomResourceDefinition",
        "Namespace",
    ]
