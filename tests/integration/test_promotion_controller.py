"""The promotion controller's reconcile pass against Promotion objects in the real API server: the
races between the API handlers (which create promotions and record approvals) and the leader's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from reconciler import crds
from reconciler.kube.client import KubeClient
from reconciler.promotion import policy
from reconciler.promotion.controller import EnvView, PromotionController
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.store import PromotionStore, now_iso
from reconciler.settings import RepositoryConfig
from reconciler.source.git import GitSource

pytestmark = pytest.mark.cluster

REVISION = "a" * 40
KEY = "input-key-of-a"


class Host:
    """The daemon's side as the controller sees it: staging Ready at REVISION long enough."""

    def environment_view(self, name: str) -> EnvView | None:
        return EnvView(name, name, REVISION, KEY, True, "Ready", "Succeeded", "", healthy_since=1.0)

    def request_fetch(self) -> None:
        raise AssertionError("no promotion may reach its commit in these tests")

    async def input_key_at(self, environment: str, revision: str) -> str:
        return KEY

    def head_revision(self) -> str:
        return REVISION


def controller(kube: KubeClient, namespace: str, tmp_path: Path) -> PromotionController:
    settings = policy.parse(
        {
            "approvers": [{"identity": "alice@example.com"}, {"identity": "bob@example.com"}],
            "pipelines": [
                {
                    "name": "p",
                    "from": "staging",
                    "to": "production",
                    "approvals": 2,
                    "approvers": ["alice@example.com", "bob@example.com"],
                }
            ],
        },
        tmp_path,
        ["staging", "production"],
        environ={
            "RECONCILER_APPROVER_ALICE_EXAMPLE_COM_SECRET": "alice-secret-0123456789abcdefgh",
            "RECONCILER_APPROVER_BOB_EXAMPLE_COM_SECRET": "bob-secret-0123456789abcdefghijk",
        },
    )
    source = GitSource(RepositoryConfig(url=str(tmp_path / "no-repository.git")), tmp_path / "cache")
    writer = GitWriter(source, "reconciler", "reconciler@example.invalid")
    return PromotionController(settings, PromotionStore(kube, namespace), writer, Host(), CollectorRegistry())


def spec() -> dict[str, Any]:
    return {
        "pipeline": "p",
        "from": "staging",
        "to": "production",
        "type": "Promotion",
        "sourceRevision": REVISION,
        "sourceInputKey": KEY,
        "requestedBy": "carol@example.com",
        "requiredApprovals": 2,
        "images": [{"name": "registry.invalid/api", "newTag": "2"}],
    }


def approval(identity: str) -> dict[str, Any]:
    return {"identity": identity, "revision": REVISION, "at": now_iso(), "via": identity, "nonce": identity}


async def test_a_promotion_caught_between_its_create_and_its_status_write_is_left_for_the_next_pass(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """The store creates the object, then writes its status (the status subresource ignores it on
    create). A pass that lists it in between used to die on the missing status and stop the loop for
    good (promotions hung in Pending); it must leave it alone and handle it on the next pass."""
    await crds.ensure(kube)
    control = controller(kube, namespace, tmp_path)
    store = control.store
    path = f"/apis/reconciler.dev/v1alpha1/namespaces/{namespace}/promotions"
    body = {"apiVersion": "reconciler.dev/v1alpha1", "kind": "Promotion", "metadata": {"name": "half"}}
    created = await kube.request("POST", path, body={**body, "spec": spec()})
    assert not created.get("status")

    await control.reconcile()  # must not raise
    assert not (await store.get("half") or {}).get("status")

    created["status"] = {"phase": "Pending", "message": "waiting for 2 approval(s)", "approvals": []}
    await kube.request("PUT", f"{path}/half/status", body=created)
    await control.reconcile()
    stored = await store.get("half")
    assert stored is not None
    assert stored["status"]["approvalSummary"] == "0/2"
    assert stored["status"]["message"] == "waiting for 0/2 approvals"


async def test_a_stale_pass_never_overwrites_an_approval_recorded_after_it_listed(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """The loop lists the promotions, an API handler records an approval, then the loop writes why the
    promotion is still Pending: the count it writes is the stored one, not the one it listed."""
    await crds.ensure(kube)
    control = controller(kube, namespace, tmp_path)
    status = {"phase": "Pending", "message": "waiting", "approvals": [], "approvalSummary": "0/2"}
    listed = await control.store.create(spec(), status, "raced")

    def approve(fresh: dict[str, Any]) -> bool:
        fresh["status"]["approvals"].append(approval("alice@example.com"))
        fresh["status"]["approvalSummary"] = "1/2"
        return True

    await control.store.update_status("raced", approve)  # the API handler, after the loop listed
    await control._step(listed)  # the loop, with what it listed before the approval
    stored = await control.store.get("raced")
    assert stored is not None
    assert stored["status"]["approvalSummary"] == "1/2", stored["status"]
    assert stored["status"]["message"] == "waiting for 1/2 approvals", stored["status"]
    assert [a["identity"] for a in stored["status"]["approvals"]] == ["alice@example.com"]
