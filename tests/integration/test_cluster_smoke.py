"""Smoke tests proving the local control plane is a real Kubernetes.

Each test fails if the piece it exercises were missing: the controller manager (Deployments, Jobs),
the scheduler and kwok (Pods bound and Ready), the apiextensions server (CRDs), server-side apply
(defaulting and managedFields) and RBAC with service-account tokens.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from reconciler.devcluster import Cluster
from reconciler.devcluster.build import Toolchain
from reconciler.kube import KubeClient
from reconciler.kube.errors import ForbiddenError, UnauthorizedError
from tests.helpers import eventually
from tests.support import custom_resource_definition

pytestmark = pytest.mark.cluster


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1.0"}]},
            },
        },
    }


async def test_fake_nodes_are_ready_and_kubectl_sees_them(cluster: Cluster, toolchain: Toolchain) -> None:
    """The pinned kubectl, with the generated kubeconfig, lists the kwok nodes as Ready."""
    process = await asyncio.create_subprocess_exec(
        str(toolchain.kubectl),
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        "get",
        "nodes",
        "--no-headers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    output = stdout.decode()
    rows = [line.split() for line in output.splitlines() if line.strip()]
    assert len(rows) == 3
    assert all(row[1] == "Ready" for row in rows), output


async def test_deployment_becomes_available(api_client: client.ApiClient, namespace: str) -> None:
    """Controller manager + scheduler + kwok: pods are scheduled and Ready; the Deployment is Available."""
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, _deployment("web", 2))

    async def available() -> client.V1Deployment | None:
        deployment = await apps.read_namespaced_deployment_status("web", namespace)
        conditions = {c.type: c.status for c in deployment.status.conditions or []}
        if conditions.get("Available") == "True" and deployment.status.ready_replicas == 2:
            return deployment
        return None

    deployment = await eventually(available, timeout=90, what="Deployment web to become Available")
    assert deployment.status.available_replicas == 2

    pods = await client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="app=web")
    assert len(pods.items) == 2
    assert all(pod.spec.node_name and pod.spec.node_name.startswith("kwok-node-") for pod in pods.items)
    assert all(pod.status.phase == "Running" for pod in pods.items)


async def test_job_completes(api_client: client.ApiClient, namespace: str) -> None:
    """The Job controller creates a pod, kwok completes it, and the Job reports Complete."""
    batch = client.BatchV1Api(api_client)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": "registry.invalid/migrate:1.0"}],
                }
            },
        },
    }
    await batch.create_namespaced_job(namespace, job)

    async def complete() -> bool:
        status = (await batch.read_namespaced_job_status("migrate", namespace)).status
        return any(c.type == "Complete" and c.status == "True" for c in status.conditions or [])

    await eventually(complete, timeout=90, what="Job migrate to complete")
    status = (await batch.read_namespaced_job_status("migrate", namespace)).status
    assert status.succeeded == 1


async def test_crd_becomes_established_and_accepts_custom_resources(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A CRD is Established; a valid custom resource is accepted and an invalid one is rejected."""
    group = f"{namespace}.smoke.reconciler.dev"
    crd = custom_resource_definition(
        group,
        "Widget",
        {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}, "required": ["size"]},
    )
    extensions = client.ApiextensionsV1Api(api_client)
    await extensions.create_custom_resource_definition(crd)
    try:

        async def established() -> bool:
            status = (await extensions.read_custom_resource_definition(f"widgets.{group}")).status
            return any(c.type == "Established" and c.status == "True" for c in status.conditions or [])

        await eventually(established, timeout=60, what="the CRD to become Established")

        custom = client.CustomObjectsApi(api_client)
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        await custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget)
        stored = await custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        assert stored["spec"] == {"size": 3}

        invalid = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w2"},
            "spec": {"size": 0},
        }
        with pytest.raises(ApiException) as rejected:
            await custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", invalid)
        assert rejected.value.status == 422
    finally:
        await extensions.delete_custom_resource_definition(f"widgets.{group}")


async def test_server_side_apply_dry_run_returns_defaults_and_managed_fields(
    api_client: client.ApiClient, namespace: str
) -> None:
    """SSA dry-run answers with server defaults and our field manager, and persists nothing."""
    body = _deployment("dry", 1)
    response, status, _ = await api_client.call_api(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/dry",
        "PATCH",
        query_params=[("fieldManager", "smoke-test"), ("dryRun", "All"), ("force", "true")],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=body,
        response_types_map={200: "object", 201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=False,
    )
    assert status in (200, 201)
    obj: dict[str, Any] = response
    # Defaults only the API server fills in:
    assert obj["spec"]["strategy"]["type"] == "RollingUpdate"
    assert obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert ("smoke-test", "Apply") in managers
    # ...and nothing was written.
    with pytest.raises(ApiException) as missing:
        await client.AppsV1Api(api_client).read_namespaced_deployment("dry", namespace)
    assert missing.value.status == 404


async def test_service_account_token_without_binding_is_forbidden(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    """A TokenRequest token authenticates (403, not 401) and RBAC denies until a RoleBinding exists."""
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    token_request = await core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"expirationSeconds": 600}}
    )
    token = token_request.status.token
    assert token

    base = api_client.configuration
    configuration = client.Configuration(host=base.host)
    configuration.ssl_ca_cert = base.ssl_ca_cert
    configuration.api_key = {"BearerToken": f"Bearer {token}"}
    async with client.ApiClient(configuration=configuration) as robot:
        robot_core = client.CoreV1Api(robot)
        with pytest.raises(ApiException) as denied:
            await robot_core.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:robot" in denied.value.body

        rbac = client.RbacAuthorizationV1Api(api_client)
        await rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "robot-view"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}],
            },
        )

        async def allowed() -> bool:
            try:
                await robot_core.list_namespaced_pod(namespace)
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        await eventually(allowed, timeout=30, what="the RoleBinding to grant access")


async def test_our_client_authenticates_with_the_pod_token_and_impersonates_on_request(
    api_client: client.ApiClient, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reconciler's KubeClient sends requests itself (not through call_api): in-cluster, the service
    account's token from its file is what the API server sees (a 403 naming the account, not a 401),
    a wrong token is a 401, and an impersonated client is seen as the user it impersonates."""
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    issued = await core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"expirationSeconds": 600}}
    )
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(issued.status.token)
    shutil.copyfile(api_client.configuration.ssl_ca_cert, account / "ca.crt")
    host, port = str(api_client.configuration.host).removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("RECONCILER_SERVICEACCOUNT_DIR", str(account))
    robot = KubeClient.in_cluster()
    try:
        with pytest.raises(ForbiddenError, match=f"system:serviceaccount:{namespace}:robot"):
            await robot.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
        with pytest.raises(ForbiddenError, match="cannot impersonate"):
            # the header is sent: the robot may not impersonate, and is refused for trying
            await robot.impersonating(f"someone-{namespace}").request("GET", "/api/v1/namespaces")
    finally:
        await robot.close()
    (account / "token").write_text("not-a-token")
    stranger = KubeClient.in_cluster()
    try:
        with pytest.raises(UnauthorizedError):
            await stranger.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    finally:
        await stranger.close()
