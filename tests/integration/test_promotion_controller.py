"""The promotion controller's reconcile pass against Promotion objects in the real API server: the
races between the API handlers (which create promotions and record approvals) and the leader's loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from reconciler import crds
from reconciler.kube.client import KubeClient
from reconciler.promotion import policy
from reconciler.promotion.controller import EnvView, PromotionController
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.store import PromotionStore, now_iso, phase
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


def public_key(identity: str) -> str:
    """A fresh SSH public key line (these tests record approvals directly; nothing is signed)."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + (
        f" {identity}"
    )


def controller(kube: KubeClient, namespace: str, tmp_path: Path) -> PromotionController:
    settings = policy.parse(
        {
            "approvers": [
                {"identity": identity, "keys": [public_key(identity)]}
                for identity in ("alice@example.com", "bob@example.com")
            ],
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
        environ={},
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


def request_call(identity: str, nonce: str) -> SignedCall:
    return SignedCall(
        identity=identity,
        key_id=identity,
        via_integration=False,
        action="request",
        nonce=nonce,
        timestamp=time.time(),
        payload={"from": "staging", "to": "production"},
    )


def order(body: dict[str, Any]) -> tuple[str, str, str]:
    """Newest last, as documented: the API server's creationTimestamp, then (within a second) the
    creating replica's requested-at annotation, then the name."""
    metadata = body["metadata"]
    requested = (metadata.get("annotations") or {}).get("reconciler.dev/requested-at", "")
    return metadata["creationTimestamp"], requested, metadata["name"]


async def _no_commit(*args: Any) -> None:
    return None


def open_promotions(promotions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in promotions if phase(p) in ("Pending", "Approved")]


async def test_two_requests_at_the_same_moment_on_two_replicas_leave_exactly_the_newest_open(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """Two replicas each create a promotion of the same pipeline, and both objects exist before either
    replica lists the pipeline's promotions (the interleaving of two simultaneous requests). Each used to
    supersede the other, leaving nothing to approve; exactly the newest (in the order every replica
    agrees on) must stay Pending, the other Superseded by it, and the leader's
    next pass must keep it so."""
    await crds.ensure(kube)
    replicas = [controller(kube, namespace, tmp_path / f"replica-{i}") for i in range(2)]
    both_created = asyncio.Barrier(2)
    for replica in replicas:
        create = replica.store.create

        async def create_then_wait(*args: Any, _create: Any = create) -> dict[str, Any]:
            body: dict[str, Any] = await _create(*args)
            await asyncio.wait_for(both_created.wait(), timeout=30)
            return body

        replica.store.create = create_then_wait  # type: ignore[method-assign]
    pipeline = replicas[0].settings.pipelines[0]
    returned = await asyncio.gather(
        *(
            replica._create(
                pipeline, spec(), request_call("carol@example.com", f"nonce-{i:016d}"), automatic=False
            )
            for i, replica in enumerate(replicas)
        )
    )

    promotions = await replicas[0].store.list()
    assert len(promotions) == 2
    newest = max(promotions, key=order)["metadata"]["name"]
    survivors = open_promotions(promotions)
    assert [p["metadata"]["name"] for p in survivors] == [newest], [p["status"] for p in promotions]
    older = next(p for p in promotions if p["metadata"]["name"] != newest)
    assert (phase(older), older["status"]["message"]) == ("Superseded", f"superseded by {newest}")
    # the survivor is whole (its own status write was not lost to the race) and approvable
    assert survivors[0]["status"]["approvalSummary"] == "0/2"
    assert survivors[0]["status"]["nonces"]
    # each replica answered with what became of its own request
    by_name = {body["metadata"]["name"]: phase(body) for body in returned}
    assert by_name == {newest: "Pending", older["metadata"]["name"]: "Superseded"}

    await replicas[1].reconcile()  # the leader's pass
    after = await replicas[0].store.list()
    assert [p["metadata"]["name"] for p in open_promotions(after)] == [newest]


async def test_the_leaders_pass_supersedes_all_but_the_newest_open_promotion(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """A replica that died between its create and its list leaves two open promotions of a pipeline:
    the leader's pass supersedes the older one, and never a promotion that is already Promoting."""
    await crds.ensure(kube)
    control = controller(kube, namespace, tmp_path)
    pending = {"phase": "Pending", "message": "waiting", "approvals": [], "approvalSummary": "0/2"}
    promoting = {**pending, "phase": "Promoting", "commit": ""}
    await control.store.create(spec(), promoting, "p-promoting")
    await control.store.create(spec(), pending, "p-one")
    await control.store.create(spec(), pending, "p-two")
    listed = await control.store.list()
    newest = max(open_promotions(listed), key=order)["metadata"]["name"]
    assert newest == "p-two"  # created after p-one, in the same second or not
    control.host.request_fetch = lambda: None  # type: ignore[method-assign]
    control._promote = _no_commit  # type: ignore[method-assign]

    await control.reconcile()
    after = {p["metadata"]["name"]: p for p in await control.store.list()}
    assert [name for name, p in after.items() if phase(p) in ("Pending", "Approved")] == [newest]
    assert phase(after["p-promoting"]) == "Promoting"
    assert after["p-one"]["status"]["message"] == "superseded by p-two"


async def test_a_promotion_superseded_after_the_leader_listed_it_is_never_committed(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """The leader lists an approved promotion; a newer request supersedes it; the leader's step with
    what it listed must not move it to Promoting, let alone write its commit."""
    await crds.ensure(kube)
    control = controller(kube, namespace, tmp_path)
    approvals = [approval("alice@example.com"), approval("bob@example.com")]
    status = {"phase": "Approved", "message": "approved", "approvals": approvals, "approvalSummary": "2/2"}
    listed = await control.store.create(spec(), status, "approved")

    def supersede(fresh: dict[str, Any]) -> bool:
        fresh["status"].update(phase="Superseded", message="superseded by newer")
        return True

    await control.store.update_status("approved", supersede)  # an API handler, after the loop listed

    async def commit(*args: Any) -> None:
        raise AssertionError("a superseded promotion was committed")

    control._write_commit = commit  # type: ignore[method-assign]
    await control._step(listed)
    stored = await control.store.get("approved")
    assert stored is not None
    assert (phase(stored), stored["status"]["message"]) == ("Superseded", "superseded by newer")


class StatusRace:
    """A KubeClient whose Promotion create is followed, before the creator's status write, by another
    replica's write of that promotion's status."""

    def __init__(self, kube: KubeClient, other: PromotionStore, name: str) -> None:
        self.kube = kube
        self.other = other
        self.name = name

    async def ensure_namespace(self, namespace: str) -> None:
        await self.kube.ensure_namespace(namespace)

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.request(method, path, **kwargs)
        if method == "POST" and path.endswith("/promotions"):

            def supersede(fresh: dict[str, Any]) -> bool:
                fresh["status"].update(phase="Superseded", message="superseded by newer")
                return True

            await self.other.update_status(self.name, supersede)
        return result


async def test_a_request_superseded_before_its_own_status_write_is_answered_with_its_fate(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """Another replica supersedes a promotion between its create and its creator's first status write:
    the creator's write conflicts; it keeps the Superseded phase, completes the rest of the status and
    answers with it instead of failing the request."""
    await crds.ensure(kube)
    other = PromotionStore(kube, namespace)
    store = PromotionStore(StatusRace(kube, other, "raced-create"), namespace)  # type: ignore[arg-type]
    status = {"phase": "Pending", "message": "waiting", "approvals": [], "approvalSummary": "0/2"}
    stored = await store.create(spec(), status, "raced-create")
    assert (phase(stored), stored["status"]["message"]) == ("Superseded", "superseded by newer")
    assert (stored["status"]["approvalSummary"], stored["status"]["approvals"]) == ("0/2", [])
    assert stored["metadata"]["annotations"]["reconciler.dev/requested-at"].endswith("Z")


async def test_with_sharding_only_the_owner_of_the_target_moves_its_promotions_on(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """Two sharded replicas run the loop over the same stored promotions: the one that does not own
    the pipeline's target leaves them exactly as they are; the owner supersedes and moves them on."""
    await crds.ensure(kube)
    owner, other = controller(kube, namespace, tmp_path / "a"), controller(kube, namespace, tmp_path / "b")
    owner.owns = lambda environment: environment in ("staging", "production")
    other.owns = lambda _environment: False
    pending = {"phase": "Pending", "message": "waiting", "approvals": [], "approvalSummary": "0/2"}
    await owner.store.create(spec(), pending, "p-one")
    await owner.store.create(spec(), pending, "p-two")
    before = {p["metadata"]["name"]: p["status"] for p in await owner.store.list()}

    await other.reconcile()
    assert {p["metadata"]["name"]: p["status"] for p in await other.store.list()} == before

    await owner.reconcile()
    after = {p["metadata"]["name"]: p for p in await owner.store.list()}
    assert after["p-one"]["status"]["message"] == "superseded by p-two"
    assert after["p-two"]["status"]["message"] == "waiting for 0/2 approvals"
