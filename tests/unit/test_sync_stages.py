"""The sync's stages on plain data and a small fake client (the real-cluster tests are in
tests/integration/test_sync.py): what is unchanged, who owns what, what a dry-run settles, what a prune
never touches, and the typed outcomes the daemon decides retries by."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.inventory import Inventory, InventoryEntry
from reconciler.objects import Action, Body, Manifest, ObjectKey
from reconciler.plan.prune import PruneOptions
from reconciler.sync import Reason, SyncFailedError, SyncOptions, SyncResult, prepare
from reconciler.sync.live import mark_unchanged, refuse_foreign
from reconciler.sync.planned import Plan, planned_objects
from reconciler.sync.prune import Pruner
from reconciler.sync.validate import settle
from reconciler.tenancy import AccessPolicy


def config_map(name: str, namespace: str = "shop", **annotations: str) -> Manifest:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "data": {"k": name},
    }
    return Manifest(body, "test")


def objects(*manifests: Manifest, env: str = "shop") -> Any:
    desired = prepare(list(manifests), env)
    return planned_objects(desired, list(manifests))


def live_of(planned: Any, **changes: Any) -> Body:
    body: Body = planned.manifest.copy_body()
    body["metadata"].update(changes)
    return body


def test_an_object_applied_with_this_hash_and_holding_every_field_is_unchanged() -> None:
    """Same manifest hash in the inventory and no drift: UNCHANGED, no request at all."""
    planned = objects(config_map("a"), config_map("b"))
    key_a, key_b = ObjectKey("", "ConfigMap", "shop", "a"), ObjectKey("", "ConfigMap", "shop", "b")
    for key in (key_a, key_b):
        planned[key].live = live_of(planned[key])
    previous = Inventory.of(
        [InventoryEntry("v1", key_a, planned[key_a].hash), InventoryEntry("v1", key_b, "old")]
    )
    result = SyncResult("shop", "r1")
    mark_unchanged(planned, previous, result)
    assert planned[key_a].plan is Plan.UNCHANGED
    assert planned[key_b].plan is Plan.WRITE
    assert [(e.key, e.action) for e in result.changeset.entries] == [(key_a, Action.UNCHANGED)]


def test_an_object_another_environment_owns_is_refused_unless_adopted() -> None:
    """OwnershipConflict names the owner; the adopt annotation takes it over."""
    planned = objects(config_map("a"), config_map("b", **{"reconciler.dev/adopt": "true"}))
    for planned_object in planned.values():
        live = live_of(planned_object)
        live["metadata"]["annotations"]["reconciler.dev/environment"] = "other"
        planned_object.live = live
    with pytest.raises(SyncFailedError) as refused:
        refuse_foreign(planned, "shop")
    assert refused.value.reason is Reason.OWNERSHIP_CONFLICT
    assert "ConfigMap/shop/a: managed by environment 'other'" in refused.value.message
    assert "ConfigMap/shop/b" not in refused.value.message


def test_a_dry_run_equal_to_the_live_object_settles_as_unchanged() -> None:
    """The server's answer equals what runs (bookkeeping aside): nothing to write."""
    planned = objects(config_map("a"))
    item = next(iter(planned.values()))
    item.live = live_of(item, resourceVersion="7")
    item.dry_run = live_of(item, resourceVersion="8", managedFields=[{"manager": "reconciler"}])
    result = SyncResult("shop", "")
    settle(item, result)
    assert item.plan is Plan.UNCHANGED
    other = next(iter(objects(config_map("b")).values()))
    other.live = live_of(other)
    other.dry_run = {**live_of(other), "data": {"k": "changed"}}
    settle(other, result)
    assert other.plan is Plan.WRITE


class FakeClient:
    """Answers GETs from a dict and records DELETEs (the prune's only requests)."""

    def __init__(self, objects: dict[ObjectKey, Body]) -> None:
        self.objects = objects
        self.deleted: list[ObjectKey] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Body | None:
        return self.objects.get(ObjectKey("", kind, namespace, name))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.deleted.append(ObjectKey("", kind, namespace, name))


async def test_the_prune_deletes_what_left_git_and_never_the_daemons_own_objects() -> None:
    """What left Git and is ours is deleted; an old inventory entry in the daemon's namespace is
    skipped and dropped; a dry run only lists."""
    gone = ObjectKey("", "ConfigMap", "shop", "gone")
    daemon_owned = ObjectKey("", "ConfigMap", "reconciler-system", "reconciler-config")
    kept = ObjectKey("", "ConfigMap", "shop", "kept")
    marks = {
        "labels": {"app.kubernetes.io/managed-by": "reconciler"},
        "annotations": {"reconciler.dev/environment": "shop"},
    }
    live = {
        key: {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": key.name, "namespace": key.namespace, **marks},
        }
        for key in (gone, daemon_owned, kept)
    }
    client = FakeClient(live)
    previous = Inventory.of([InventoryEntry("v1", key) for key in (gone, daemon_owned, kept)])
    options = SyncOptions("shop", prune=PruneOptions(max_share=1.0))
    result = SyncResult("shop", "")
    policy = AccessPolicy(unrestricted=True)
    keep = await Pruner(client).prune(previous, {kept}, options, policy, result, lambda _: None)  # type: ignore[arg-type]
    assert client.deleted == [gone]
    assert keep == set()
    actions = {str(e.key): e.action for e in result.changeset.entries}
    assert actions == {str(gone): Action.DELETED, str(daemon_owned): Action.SKIPPED}


def test_reasons_say_whether_the_same_inputs_are_worth_retrying() -> None:
    """The daemon retries API refusals and outages, never a render error or a policy violation."""
    assert Reason.CLUSTER_UNREACHABLE.retryable
    assert Reason.VALIDATION_FAILED.retryable
    assert not Reason.RENDER_FAILED.retryable
    assert not Reason.POLICY_VIOLATION.retryable
    assert not Reason.PRUNE_BLOCKED.retryable
    result = SyncResult("shop", "")
    result.reason = "ApiError"
    assert result.retryable
    assert result.summary()["reason"] == "ApiError"
