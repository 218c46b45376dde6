"""The platform side of a tenant environment: what an administrator creates before the daemon syncs it.

A tenant environment (``service_account`` in the daemon's configuration) is synced as its own
ServiceAccount, so the cluster's RBAC bounds what its commits can do. For each tenant namespace the
administrator creates, outside the environments repository:

* the Namespace and the ServiceAccount ``reconciler-deployer`` in it;
* a RoleBinding of that ServiceAccount to the ClusterRole ``reconciler-tenant`` (the namespaced kinds a
  tenant may manage), so it can write in its own namespace and nowhere else;
* a ClusterRole and ClusterRoleBinding letting it read and patch its own Namespace object (by name);
* a RoleBinding granting the daemon's own identity ``impersonate`` on exactly that ServiceAccount
  (ClusterRole ``reconciler-impersonate-deployer``, restricted by ``resourceNames``, bound per namespace).

The demo and the tests create these objects; ``deploy/overlays/example/tenants.yaml`` is this module's
output for the example tenants (a test keeps the two identical).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEPLOYER = "reconciler-deployer"
TENANT_ROLE = "reconciler-tenant"
IMPERSONATE_ROLE = "reconciler-impersonate-deployer"
RBAC = "rbac.authorization.k8s.io"
WRITE = ["get", "list", "watch", "create", "patch", "delete"]

# the namespaced kinds a tenant may manage in its own namespace (what environments/ access and aiplus use)
TENANT_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "serviceaccounts", "persistentvolumeclaims"],
        "verbs": WRITE,
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": WRITE},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": WRITE},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"], "verbs": WRITE},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": WRITE},
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors"], "verbs": WRITE},
]


def service_account(namespace: str) -> str:
    """The ``service_account`` value of the daemon's configuration for a tenant namespace."""
    return f"{namespace}/{DEPLOYER}"


def shared_objects() -> list[dict[str, Any]]:
    """The cluster-wide roles every tenant namespace binds."""
    return [
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": TENANT_ROLE},
            "rules": TENANT_RULES,
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": IMPERSONATE_ROLE},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["serviceaccounts"],
                    "verbs": ["impersonate"],
                    "resourceNames": [DEPLOYER],
                }
            ],
        },
    ]


def namespace_objects(namespace: str, daemon_subject: dict[str, str]) -> list[dict[str, Any]]:
    """One tenant namespace: the Namespace, its deployer, its rights, and the daemon's right to act as it.

    ``daemon_subject`` is the RBAC subject of the daemon's own identity (a ServiceAccount in a cluster;
    the demo's admin user needs no grant but gets one, so the objects are the same everywhere).
    """
    own_namespace_role = f"{TENANT_ROLE}-namespace-{namespace}"
    deployer = {"kind": "ServiceAccount", "name": DEPLOYER, "namespace": namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEPLOYER, "namespace": namespace},
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": TENANT_ROLE, "namespace": namespace},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": TENANT_ROLE},
            "subjects": [deployer],
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": own_namespace_role},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces"],
                    "verbs": ["get", "patch"],
                    "resourceNames": [namespace],
                }
            ],
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": own_namespace_role},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": own_namespace_role},
            "subjects": [deployer],
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": IMPERSONATE_ROLE, "namespace": namespace},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": IMPERSONATE_ROLE},
            "subjects": [daemon_subject],
        },
    ]


def platform_objects(namespaces: Sequence[str], daemon_subject: dict[str, str]) -> list[dict[str, Any]]:
    """Everything an administrator creates for these tenant namespaces."""
    objects = shared_objects()
    for namespace in namespaces:
        objects.extend(namespace_objects(namespace, daemon_subject))
    return objects
