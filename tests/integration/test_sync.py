"""The sync engine against the local control plane: the "done when" list of the engine, one test each."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from reconciler.health import HealthStatus
from reconciler.inventory import InventoryStore
from reconciler.kube import ApplyOptions, KubeClient
from reconciler.kube.errors import NotFoundError
from reconciler.objects import Action, ObjectKey
from reconciler.plan.prune import PruneOptions
from reconciler.render import Renderer
from reconciler.sync import Engine, SyncOptions, SyncResult
from tests.helpers import eventually
from tests.support import (
    AuditLog,
    EnvRepo,
    config_map,
    custom_resource_definition,
    deployment,
)

pytestmark = pytest.mark.cluster


async def sync(engine: Engine, repo: EnvRepo, **options: Any) -> SyncResult:
    opts = SyncOptions(environment=repo.name, health_timeout=options.pop("health_timeout", 60), **options)
    return await engine.sync_directory(repo.root, repo.path, repo.options, opts)


def actions(result: SyncResult) -> dict[str, str]:
    return {str(e.key): e.action.value for e in result.changeset.entries}


def full_environment(ns: str) -> list[dict[str, Any]]:
    group = f"{ns}.example.dev"
    app_ns = f"{ns}-app"
    return [
        custom_resource_definition(
            group, "Widget", {"type": "object", "properties": {"size": {"type": "integer"}}}
        ),
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": app_ns},
            "spec": {"size": 2},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app_ns}},
        deployment("api", app_ns, replicas=2),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "namespace": app_ns},
            "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api", "namespace": app_ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
            },
        },
    ]


async def test_full_environment_syncs_in_one_pass_to_healthy(
    engine: Engine, repo: EnvRepo, kube: KubeClient
) -> None:
    """CRD + custom resource + Namespace + Deployment + Service + HPA: one sync, Healthy, no "no matches"."""
    repo.set_objects(full_environment(repo.name))
    result = await sync(engine, repo)
    assert result.ok, result.message
    assert result.health == HealthStatus.HEALTHY
    assert "no matches" not in result.message
    assert set(actions(result).values()) == {"created"}
    assert len(result.changeset.entries) == 6
    widget = await kube.get(f"{repo.name}.example.dev/v1", "Widget", f"{repo.name}-app", "w")
    assert widget is not None
    assert widget["spec"] == {"size": 2}
    live = await kube.get("apps/v1", "Deployment", f"{repo.name}-app", "api")
    assert live is not None
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    assert live["metadata"]["annotations"]["reconciler.dev/environment"] == repo.name


async def test_second_sync_of_the_same_revision_writes_nothing_and_does_not_render(
    engine: Engine, repo: EnvRepo, kube: KubeClient, audit: AuditLog
) -> None:
    """Counted by the API server itself (its audit log): the first sync writes, the second writes nothing."""
    repo.set_objects(full_environment(repo.name))
    start = audit.mark()
    first = await sync(engine, repo)
    assert first.ok, first.message
    first_writes = await audit.writes(kube, start)
    # the measurement sees our writes: 6 objects and the inventory
    assert sum(first_writes.values()) >= 7, first_writes

    renders = engine.renderer.renders
    start = audit.mark()
    second = await sync(engine, repo)
    assert second.ok, second.message
    assert set(actions(second).values()) == {"unchanged"}
    second_writes = await audit.writes(kube, start)
    assert second_writes == {}, f"writes during a no-op sync: {second_writes}"
    assert engine.renderer.renders == renders
    assert not second.rendered


async def test_image_change_configures_only_that_deployment_and_waits_for_rollout(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Only the changed Deployment is written, and the sync returns after its rollout completed."""
    repo.set_objects(
        [deployment("api", namespace, replicas=2), deployment("web", namespace), config_map("cfg", namespace)]
    )
    assert (await sync(engine, repo)).ok
    repo.set_objects(
        [
            deployment("api", namespace, image="registry.invalid/app:2", replicas=2),
            deployment("web", namespace),
            config_map("cfg", namespace),
        ]
    )
    result = await sync(engine, repo)
    assert result.ok, result.message
    assert actions(result) == {
        f"Deployment/{namespace}/api": "configured",
        f"Deployment/{namespace}/web": "unchanged",
        f"ConfigMap/{namespace}/cfg": "unchanged",
    }
    entry = next(e for e in result.changeset.entries if e.action == Action.CONFIGURED)
    assert (
        "-        image: registry.invalid/app:1" in entry.diff
        or "-      - image: registry.invalid/app:1" in entry.diff
    )
    live = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert live is not None
    status = live["status"]
    assert status["observedGeneration"] == live["metadata"]["generation"]
    assert status["updatedReplicas"] == 2
    assert status.get("availableReplicas") == 2
    assert status.get("replicas") == 2


async def test_prune_deletes_only_what_left_git_and_is_ours(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Removed object pruned; a label copier, an object with ownerReferences and a Namespace are not."""
    owner = await kube.apply(
        config_map("owner", namespace),
    )
    extra_ns = f"{namespace}-extra"
    owned_child = config_map("child", namespace)
    owned_child["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    keep = [config_map(f"keep-{i}", namespace) for i in range(4)]
    repo.set_objects(
        [
            *keep,
            config_map("gone", namespace),
            owned_child,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra_ns}},
        ]
    )
    assert (await sync(engine, repo)).ok
    copier = config_map("copier", namespace)
    copier["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "reconciler"}
    copier["metadata"]["annotations"] = {"reconciler.dev/environment": repo.name}
    await kube.apply(copier)

    repo.set_objects(keep)
    result = await sync(engine, repo)
    assert result.ok, result.message
    assert actions(result)[f"ConfigMap/{namespace}/gone"] == "deleted"
    assert actions(result)[f"ConfigMap/{namespace}/child"] == "skipped"
    assert actions(result)[f"Namespace/{extra_ns}"] == "skipped"
    assert await kube.get("v1", "ConfigMap", namespace, "gone") is None
    for name in ("child", "copier", "owner", "keep-0"):
        assert await kube.get("v1", "ConfigMap", namespace, name) is not None, name
    assert await kube.get("v1", "Namespace", "", extra_ns) is not None
    inventory = await InventoryStore(kube).load(repo.name)
    assert inventory is not None
    assert inventory.keys == {ObjectKey("", "ConfigMap", namespace, f"keep-{i}") for i in range(4)}


async def test_one_invalid_object_among_fifty_means_zero_writes(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str, audit: AuditLog
) -> None:
    """Validation refuses the whole revision before the first write and names the bad object."""
    objects: list[dict[str, Any]] = [config_map(f"cm-{i}", namespace) for i in range(49)]
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"ports": [{"port": 99999}]},
        }
    )
    repo.set_objects(objects)
    start = audit.mark()
    result = await sync(engine, repo)
    writes = await audit.writes(kube, start)
    assert result.condition == "Stalled"
    assert result.reason == "ValidationFailed"
    assert f"Service/{namespace}/bad" in result.message
    assert "99999" in result.message or "port" in result.message
    assert writes == {}, f"writes despite a refused revision: {writes}"
    assert await kube.get("v1", "ConfigMap", namespace, "cm-0") is None
    assert await InventoryStore(kube).load(repo.name) is None


async def test_one_app_in_many_new_namespaces_is_dry_run_once_per_distinct_request(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str, audit: AuditLog
) -> None:
    """The same objects in three namespaces the sync creates become the same stand-in request: each
    distinct one is dry-run once (not once per namespace), everything is still created; and a refusal
    of a shared request names every object it stood for, with nothing written."""
    spaces = [f"{namespace}-n{i}" for i in range(3)]
    objects: list[dict[str, Any]] = []
    for space in spaces:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": space}})
        objects.append(config_map("settings", space, LOG_LEVEL="info"))
        objects.append(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": space}}
        )
    try:
        repo.set_objects(objects)
        patches = sum(n for (verb, _), n in kube.requests.items() if verb == "PATCH")
        start = audit.mark()
        result = await sync(engine, repo)
        writes = await audit.writes(kube, start)
        sent = sum(n for (verb, _), n in kube.requests.items() if verb == "PATCH") - patches
        assert result.condition == "Ready", result.message
        assert {k for k, v in actions(result).items() if v == "created"} >= {
            f"{kind}/{space}/{name}" for space in spaces for kind, name in (("ConfigMap", "settings"),)
        }
        for space in spaces:
            assert await kube.get("v1", "ServiceAccount", space, "app") is not None
        # 3 Namespaces (each its own object) + 2 distinct stand-in requests, instead of 3 + 6
        assert sent - writes["patch"] == 5, (sent, writes)

        bad = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bad", "namespace": ""},
            "spec": {"ports": [{"port": 99999}]},
        }
        more = [f"{namespace}-m{i}" for i in range(2)]
        spaces += more
        refused = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": space}} for space in more]
        refused += [{**bad, "metadata": {"name": "bad", "namespace": space}} for space in more]
        repo.set_objects(objects + refused)
        start = audit.mark()
        result = await sync(engine, repo)
        assert result.reason == "ValidationFailed"
        for space in more:
            assert f"Service/{space}/bad" in result.message
        assert await audit.writes(kube, start) == {}
        assert await kube.get("v1", "Namespace", "", more[0]) is None
    finally:
        for space in spaces:
            with contextlib.suppress(NotFoundError):
                await kube.request("DELETE", f"/api/v1/namespaces/{space}")


async def test_empty_or_failed_render_prunes_nothing_and_keeps_state(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """An emptied overlay trips the circuit breaker; a broken one stops at render. Nothing is deleted."""
    repo.set_objects([config_map(f"cm-{i}", namespace) for i in range(3)])
    assert (await sync(engine, repo)).ok
    store = InventoryStore(kube)
    inventory_before = await store.load(repo.name)

    repo.set_objects([])
    empty = await sync(engine, repo)
    assert empty.condition == "Stalled"
    assert empty.reason == "PruneBlocked"
    assert "render is empty" in empty.message
    assert not empty.synced

    repo.set_objects([config_map("cm-0", namespace)])
    repo.write("kustomization.yaml", "resources: [missing.yaml]\n")
    failed = await sync(engine, repo)
    assert failed.condition == "Stalled"
    assert failed.reason == "RenderFailed"
    assert "missing.yaml" in failed.message

    for i in range(3):
        assert await kube.get("v1", "ConfigMap", namespace, f"cm-{i}") is not None
    inventory_after = await store.load(repo.name)
    assert inventory_before is not None
    assert inventory_after is not None
    assert inventory_after.keys == inventory_before.keys


async def test_drift_is_reverted_from_the_watch_and_hpa_replicas_are_left_alone(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """An edit of a managed field is reverted without a poll; an autoscaler's replica change is not."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    }
    repo.set_objects([deployment("api", namespace, replicas=3), hpa])
    assert (await sync(engine, repo)).ok
    key = ObjectKey("apps", "Deployment", namespace, "api")

    # someone edits the image (as `kubectl edit` would: another field manager, forced)
    edit = deployment("api", namespace, image="registry.invalid/hacked:1")
    del edit["spec"]["replicas"]
    started = time.monotonic()
    await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/api",
        query=[("fieldManager", "kubectl-edit"), ("force", "true")],
        body=edit,
        content_type="application/apply-patch+yaml",
    )

    async def reverted() -> bool:
        live = await kube.get("apps/v1", "Deployment", namespace, "api")
        return (
            bool(live)
            and live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/app:1"
        )

    await eventually(reverted, timeout=10, interval=0.05, what="the drift to be reverted")
    print(f"drift reverted {time.monotonic() - started:.2f} s after the edit")

    # the engine records the correction right after its apply returns, which may be just after the
    # test sees the reverted object: wait for the record rather than racing it
    async def recorded() -> bool:
        return any(e.key == key and e.action == Action.CONFIGURED for e in engine.drift_events)

    await eventually(recorded, timeout=5, interval=0.02, what="the drift correction to be recorded")

    # the autoscaler (or a human) scales the workload: not drift, no correction
    corrections = len(engine.drift_events)
    await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/api/scale",
        query=[("fieldManager", "horizontal-pod-autoscaler")],
        body={"spec": {"replicas": 6}},
        content_type="application/merge-patch+json",
    )
    assert engine.cache is not None
    cache = engine.cache

    async def cache_sees_six() -> bool:
        live = cache.get(key)
        return bool(live) and live["spec"]["replicas"] == 6

    await eventually(cache_sees_six, timeout=10, what="the watch to deliver the scale change")
    await asyncio.sleep(0)  # let any correction task that was scheduled start
    assert len(engine.drift_events) == corrections
    live = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert live is not None
    assert live["spec"]["replicas"] == 6
    # and a re-sync leaves the autoscaler's value alone too
    result = await sync(engine, repo)
    assert result.ok, result.message
    live = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert live is not None
    assert live["spec"]["replicas"] == 6


async def test_hpa_handoff_keeps_replicas_when_an_hpa_is_added(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Adding an HPA for a Deployment we scaled from Git does not scale it down to one replica."""
    repo.set_objects([deployment("api", namespace, replicas=4)])
    assert (await sync(engine, repo)).ok
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 2,
            "maxReplicas": 10,
        },
    }
    repo.set_objects([deployment("api", namespace, replicas=4), hpa])
    result = await sync(engine, repo)
    assert result.ok, result.message
    live = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert live is not None
    assert live["spec"]["replicas"] == 4
    managers = {
        e["manager"]
        for e in live["metadata"]["managedFields"]
        if "f:replicas" in e.get("fieldsV1", {}).get("f:spec", {})
    }
    assert "reconciler" not in managers


async def test_immutable_field_change_is_a_clear_error_and_recreates_with_the_annotation(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Changing a Deployment's selector is refused with advice; with the annotation it is recreated."""
    repo.set_objects([deployment("api", namespace, labels={"app": "api"})])
    assert (await sync(engine, repo)).ok
    first = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert first is not None

    changed = deployment("api", namespace, labels={"app": "api", "tier": "backend"})
    repo.set_objects([changed])
    refused = await sync(engine, repo)
    assert refused.condition == "Stalled"
    assert "immutable" in refused.message
    assert "reconciler.dev/recreate-on-immutable" in refused.message
    assert f"Deployment/{namespace}/api" in refused.message

    changed["metadata"]["annotations"] = {"reconciler.dev/recreate-on-immutable": "true"}
    repo.set_objects([changed])
    recreated = await sync(engine, repo)
    assert recreated.ok, recreated.message
    second = await kube.get("apps/v1", "Deployment", namespace, "api")
    assert second is not None
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["spec"]["selector"]["matchLabels"] == {"app": "api", "tier": "backend"}


async def test_dry_run_writes_nothing_and_reports_changes(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """sync --dry-run validates and reports what would change, and writes nothing."""
    repo.set_objects([config_map("a", namespace), config_map("b", namespace)])
    result = await sync(engine, repo, dry_run=True)
    assert result.reason == "DryRun"
    assert actions(result) == {f"ConfigMap/{namespace}/a": "created", f"ConfigMap/{namespace}/b": "created"}
    assert await kube.get("v1", "ConfigMap", namespace, "a") is None
    assert await InventoryStore(kube).load(repo.name) is None


async def test_mass_prune_is_blocked_until_overridden(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """Deleting 3 of 4 objects is blocked; the explicit override lets it happen."""
    repo.set_objects([config_map(f"cm-{i}", namespace) for i in range(4)])
    assert (await sync(engine, repo)).ok
    repo.set_objects([config_map("cm-0", namespace)])
    blocked = await sync(engine, repo)
    assert blocked.reason == "PruneBlocked"
    assert "3 of 4" in blocked.message
    assert await kube.get("v1", "ConfigMap", namespace, "cm-3") is not None
    allowed = await sync(engine, repo, prune=PruneOptions(allow_mass_prune=True))
    assert allowed.ok, allowed.message
    assert await kube.get("v1", "ConfigMap", namespace, "cm-3") is None


async def test_health_timeout_names_the_unhealthy_objects_and_why(
    engine: Engine, repo: EnvRepo, namespace: str
) -> None:
    """A Deployment whose pods cannot be scheduled stalls the stage with a message naming it."""
    stuck = deployment("stuck", namespace)
    stuck["spec"]["template"]["spec"]["nodeSelector"] = {"no-such-node": "true"}
    repo.set_objects([stuck, config_map("cfg", namespace)])
    result = await sync(engine, repo, health_timeout=3)
    assert result.condition == "Stalled"
    assert result.reason == "HealthCheckFailed"
    assert f"Deployment/{namespace}/stuck: Progressing: 0 of 1 updated replicas available" in result.message
    assert "ConfigMap" not in result.message


async def test_conflicts_are_forced_unless_the_object_opts_out(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str
) -> None:
    """A field owned by another manager is taken over by default, and refused with force-conflicts false."""
    await kube.apply(config_map("shared", namespace, owner="other"), ApplyOptions(field_manager="other-tool"))
    polite = config_map("shared", namespace, owner="reconciler")
    polite["metadata"]["annotations"] = {"reconciler.dev/force-conflicts": "false"}
    repo.set_objects([polite])
    refused = await sync(engine, repo)
    assert refused.condition == "Stalled"
    assert "conflict" in refused.message.lower()
    assert f"ConfigMap/{namespace}/shared" in refused.message

    repo.set_objects([config_map("shared", namespace, owner="reconciler")])
    forced = await sync(engine, repo)
    assert forced.ok, forced.message
    live = await kube.get("v1", "ConfigMap", namespace, "shared")
    assert live is not None
    assert live["data"] == {"owner": "reconciler"}


async def test_an_object_another_environment_manages_is_refused_unless_adopted(
    engine: Engine, repo: EnvRepo, kube: KubeClient, namespace: str, tmp_path: Path, audit: AuditLog
) -> None:
    """Two environments declaring one object would take it from each other on every sync: the second
    is refused before any write, naming the owner; with the adopt annotation it takes the object over,
    and then the first is refused in turn and its prune never deletes the object."""
    repo.set_objects([config_map("shared", namespace, owner="a"), config_map("a-only", namespace)])
    assert (await sync(engine, repo)).ok
    other = EnvRepo(tmp_path / "other", f"{namespace}-b", repo.options)
    other.set_objects([config_map("shared", namespace, owner="b"), config_map("b-only", namespace)])

    start = audit.mark()
    refused = await sync(engine, other)
    assert (refused.ok, refused.reason) == (False, "OwnershipConflict")
    assert f"ConfigMap/{namespace}/shared: managed by environment {repo.name!r}" in refused.message
    assert "reconciler.dev/adopt" in refused.message
    writes = await audit.writes(kube, start)
    assert not writes, writes  # not even b-only, nor b's inventory
    live = await kube.get("v1", "ConfigMap", namespace, "shared")
    assert live is not None
    assert live["data"] == {"owner": "a"}

    adopting = config_map("shared", namespace, owner="b")
    adopting["metadata"]["annotations"] = {"reconciler.dev/adopt": "true"}
    other.set_objects([adopting, config_map("b-only", namespace)])
    adopted = await sync(engine, other)
    assert adopted.ok, adopted.message
    assert actions(adopted)[f"ConfigMap/{namespace}/shared"] == "configured", actions(adopted)
    live = await kube.get("v1", "ConfigMap", namespace, "shared")
    assert live is not None
    assert live["data"] == {"owner": "b"}, (live, other.path, list(other.path.iterdir()), adopted)
    assert live["metadata"]["annotations"]["reconciler.dev/environment"] == other.name

    still = await sync(engine, repo)  # a still declares it: refused, nothing fought over
    assert (still.ok, still.reason) == (False, "OwnershipConflict")
    assert f"managed by environment {other.name!r}" in still.message
    repo.set_objects([config_map("a-only", namespace)])  # a lets it go: its prune leaves b's object alone
    assert (await sync(engine, repo)).ok
    live = await kube.get("v1", "ConfigMap", namespace, "shared")
    assert live is not None
    assert live["data"] == {"owner": "b"}


class CountingClient(KubeClient):
    """The session's client (same connection), counting LISTs (by kind, and by kind and namespace: ""
    for cluster-wide) and WATCHes by kind."""

    lists: Counter[str]
    scoped: Counter[tuple[str, str]]
    watches: Counter[str]

    @classmethod
    def of(cls, kube: KubeClient) -> CountingClient:
        counting = cls.__new__(cls)
        counting.__dict__.update(kube.__dict__)
        counting._owns_api = False
        counting.lists, counting.scoped, counting.watches = Counter(), Counter(), Counter()
        return counting

    async def list(self, info: Any, *, label_selector: str = "", namespace: str = "") -> Any:
        self.lists[info.kind] += 1
        self.scoped[(info.kind, namespace)] += 1
        return await super().list(info, label_selector=label_selector, namespace=namespace)

    def watch(self, info: Any, resource_version: str, **selectors: Any) -> Any:
        self.watches[info.kind] += 1
        return super().watch(info, resource_version, **selectors)


async def test_a_one_shot_sync_watches_what_it_waits_for_until_it_ends(
    kube: KubeClient, repo: EnvRepo, namespace: str
) -> None:
    """Without the daemon's caches (the CLI), a kind waited on is watched from its first wait to the end
    of the sync: later waits and the final health read it from there, so each kind is listed a few
    times per sync at most (never per object or per poll), and no watch outlives the sync."""
    counting = CountingClient.of(kube)
    engine = Engine(counting, renderer=Renderer())
    settings = config_map("settings", namespace)
    settings["metadata"]["annotations"] = {"reconciler.dev/wave": "-1"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": namespace},
        "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]},
    }
    repo.set_objects([settings, deployment("api", namespace), service])
    try:
        result = await sync(engine, repo)
        assert result.condition == "Ready", result.message
        assert result.health == HealthStatus.HEALTHY
        assert counting.watches["Deployment"] == 1, counting.watches
        # the plan's read, the stage's first look, the watch's own list: nothing after it
        assert counting.lists["Deployment"] <= 3, counting.lists
        assert max(counting.lists.values()) <= 3, counting.lists
        assert not [t for t in asyncio.all_tasks() if "LiveCache" in repr(t.get_coro())]
    finally:
        await engine.close()


async def test_a_one_shot_sync_lists_only_the_namespaces_its_objects_can_be_in(
    kube: KubeClient, repo: EnvRepo, namespace: str
) -> None:
    """Without caches, a kind is listed in the namespaces of the environment's objects, never across
    the cluster (whose other labelled objects are not this sync's business), and the plan does not read
    objects in a namespace the sync creates (they cannot exist yet)."""
    fresh = f"{namespace}-fresh"
    counting = CountingClient.of(kube)
    engine = Engine(counting, renderer=Renderer())
    repo.set_objects(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fresh}},
            config_map("settings", fresh),
            config_map("settings", namespace),
        ]
    )
    try:
        result = await sync(engine, repo)
        assert result.condition == "Ready", result.message
        assert await kube.get("v1", "ConfigMap", fresh, "settings") is not None
        assert counting.scoped[("ConfigMap", "")] == 0, counting.scoped
        # the plan read the existing namespace only; the waits read both
        assert counting.scoped[("ConfigMap", fresh)] == counting.scoped[("ConfigMap", namespace)] - 1 > 0
    finally:
        await engine.close()
        with contextlib.suppress(NotFoundError):
            await kube.request("DELETE", f"/api/v1/namespaces/{fresh}")
