"""environments/ against the local control plane: every system syncs to Healthy in staging and in
production, waves hold (nothing starts before the waves below it are healthy), CRDs and their custom
resources arrive in one sync, the overlays pass a server-side dry-run, and a blue/green switch of the
Detection API never points the Service at a slot that is not healthy.

Ordering claims are checked against the API server's own record: a watch per kind in the overlay's
namespace keeps every version of every object with its resourceVersion (etcd's revision, one global
order), so "what did object B look like when object A was created (or changed)" has an exact answer,
whatever the timing of the test's own reads.

There is no volume provisioner on the local cluster: before a sync, the test creates one PersistentVolume
per claim of the render (PVCs and StatefulSet ``volumeClaimTemplates``), pre-bound through ``claimRef``.
Overlays have fixed namespaces, so each test waits until its namespaces are gone before it starts and
deletes them (and its PersistentVolumes and cluster-scoped objects, never the CRDs) when it ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.health import HealthStatus, assess
from reconciler.kube import ApplyOptions, KubeClient
from reconciler.kube.client import ResourceInfo
from reconciler.kube.errors import KubeError
from reconciler.objects import WAVE_ANNOTATION, Action, Body, Manifest
from reconciler.plan.hpa import hpa_targets
from reconciler.render import RenderOptions
from reconciler.sync import Engine, SyncOptions, SyncResult
from tests.helpers import eventually
from tests.support import running_engine

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
ADDONS = "cluster-addons/crds"
ADDONS_ENV = "cluster-addons"
NEEDS_ADDONS = ("media", "aiplus")
# media/staging last: the first test of this module (CRDs and custom resources in one sync) uses its
# namespace, which then has time to go away while the others run
OVERLAYS = [
    ADDONS,
    # detection early: the blue/green tests at the end reuse its namespaces, which by then are gone
    "detection/staging",
    "detection/production",
    *(
        f"{system}/{overlay}"
        for system in ("tams", "access", "aiplus")
        for overlay in ("staging", "production")
    ),
    "media/production",
    "media/staging",
]
HEALTH_TIMEOUT = 120.0
GONE_TIMEOUT = 90.0
WATCHED = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
)
TEST_MANAGER = "reconciler-tests"
ADDON_CRDS = (
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "peerauthentications.security.istio.io",
    "servicemonitors.monitoring.coreos.com",
)


def env_name(label: str) -> str:
    """A unique environment name (inventory and ownership marks) per test; the add-on CRDs are shared
    by the whole session cluster, so whatever syncs them is always the one environment that owns them
    (the same name as in tests/e2e/test_aiplus_promotion.py)."""
    if label == ADDONS:
        return ADDONS_ENV
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


def wave(manifest: Manifest) -> int:
    return int(manifest.annotation(WAVE_ANNOTATION, "0"))


def namespaces_of(manifests: list[Manifest]) -> list[str]:
    return sorted(m.key.name for m in manifests if m.key.kind == "Namespace")


# -- volumes: the provisioner the local cluster does not have ---------------------------------------
@dataclass(frozen=True)
class Claim:
    """A PersistentVolumeClaim the render will create, directly or through a StatefulSet."""

    namespace: str
    name: str
    storage: str
    access_modes: tuple[str, ...]
    storage_class: str


def _claim(namespace: str, name: str, spec: dict[str, Any]) -> Claim:
    return Claim(
        namespace,
        name,
        str(spec["resources"]["requests"]["storage"]),
        tuple(spec.get("accessModes") or ["ReadWriteOnce"]),
        str(spec.get("storageClassName") or ""),
    )


def claims_of(manifests: list[Manifest]) -> list[Claim]:
    """Every claim of the render: PVCs, and ``<template>-<statefulset>-<ordinal>`` per replica."""
    claims: list[Claim] = []
    for manifest in manifests:
        key, spec = manifest.key, manifest.body.get("spec") or {}
        if key.kind == "PersistentVolumeClaim":
            claims.append(_claim(key.namespace, key.name, spec))
        elif key.kind == "StatefulSet":
            for template in spec.get("volumeClaimTemplates") or []:
                for ordinal in range(int(spec.get("replicas", 1))):
                    name = f"{template['metadata']['name']}-{key.name}-{ordinal}"
                    claims.append(_claim(key.namespace, name, template["spec"]))
    return claims


async def create_volumes(kube: KubeClient, claims: list[Claim], tag: str) -> list[str]:
    """One hostPath PersistentVolume per claim, pre-bound to it (``claimRef``), of its size, modes, class."""
    names = []
    for claim in claims:
        name = f"{tag}-{claim.namespace}-{claim.name}"[:250]
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"reconciler-tests/volumes": tag}},
                "spec": {
                    "capacity": {"storage": claim.storage},
                    "accessModes": list(claim.access_modes),
                    "storageClassName": claim.storage_class,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "claimRef": {"namespace": claim.namespace, "name": claim.name},
                    "hostPath": {"path": f"/var/lib/test-volumes/{name}", "type": "DirectoryOrCreate"},
                },
            },
            ApplyOptions(field_manager=TEST_MANAGER, force=True),
        )
        names.append(name)
    return names


# -- clean-up -------------------------------------------------------------------------------------------
@dataclass
class Cleanup:
    """What a test leaves behind: deleted (without waiting) when it ends; the next user of a namespace
    waits until it is gone (``await_absent``)."""

    kube: KubeClient
    namespaces: set[str] = field(default_factory=set)
    cluster_objects: set[tuple[str, str, str]] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)

    def track(self, manifests: list[Manifest]) -> None:
        """Remember the render's Namespaces and cluster-scoped objects (CRDs excepted: they are shared)."""
        for manifest in manifests:
            key = manifest.key
            if key.kind == "Namespace":
                self.namespaces.add(key.name)
            elif not key.namespace and key.kind != "CustomResourceDefinition":
                self.cluster_objects.add((manifest.api_version, key.kind, key.name))

    async def await_absent(self, manifests: list[Manifest]) -> None:
        """Wait until the render's namespaces are gone (a previous test may still be deleting them)."""
        for name in namespaces_of(manifests):
            live = await self.kube.get("v1", "Namespace", "", name)
            if live is None:
                continue
            if not (live.get("metadata") or {}).get("deletionTimestamp"):
                await self.kube.delete("v1", "Namespace", "", name)

            async def gone(name: str = name) -> bool:
                return await self.kube.get("v1", "Namespace", "", name) is None

            await eventually(gone, timeout=GONE_TIMEOUT, what=f"namespace {name} to be deleted")

    async def run(self) -> None:
        for name in sorted(self.namespaces):
            await self.kube.delete("v1", "Namespace", "", name)
        for api_version, kind, name in sorted(self.cluster_objects):
            await self.kube.delete(api_version, kind, "", name)
        for name in sorted(self.volumes):
            await self.kube.delete("v1", "PersistentVolume", "", name)


@pytest.fixture
async def cleanup(kube: KubeClient) -> AsyncIterator[Cleanup]:
    tracker = Cleanup(kube)
    try:
        yield tracker
    finally:
        await tracker.run()


@pytest.fixture
def render_options(toolchain: Toolchain) -> RenderOptions:
    return RenderOptions(kustomize=toolchain.kustomize, timeout=30)


async def render(engine: Engine, root: Path, path: str, options: RenderOptions) -> list[Manifest]:
    """The overlay's objects, through the engine's renderer (so the sync's own render is a cache hit)."""
    return list((await engine.renderer.render(root, root / path, options)).manifests)


async def sync(engine: Engine, root: Path, path: str, options: RenderOptions, environment: str) -> SyncResult:
    return await engine.sync_directory(
        root, root / path, options, SyncOptions(environment=environment, health_timeout=HEALTH_TIMEOUT)
    )


async def sync_addons(engine: Engine, options: RenderOptions) -> None:
    """The CRDs that media and aiplus need (idempotent: usually Established already)."""
    result = await sync(engine, ROOT / "environments", ADDONS, options, env_name(ADDONS))
    assert result.ok, result.message


async def prepare(kube: KubeClient, cleanup: Cleanup, manifests: list[Manifest], tag: str) -> None:
    """Namespaces of a previous test gone, volumes for every claim in place, clean-up registered."""
    await cleanup.await_absent(manifests)
    cleanup.track(manifests)
    cleanup.volumes.update(await create_volumes(kube, claims_of(manifests), tag))


# -- the record of what happened, in etcd order --------------------------------------------------------
@dataclass
class Version:
    """One version of an object as a watch delivered it (``body`` None: deleted)."""

    rv: int
    kind: str
    name: str
    body: Body | None


class Recorder:
    """Every version of the watched kinds in one namespace, from before a sync until ``stop``."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.versions: dict[tuple[str, str], list[Version]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for api_version, kind in WATCHED:
            info = await self.kube.resource(api_version, kind)
            items, version = await self.kube.list(info, namespace=self.namespace)
            for item in items:
                self._record(kind, item, deleted=False)
            self._tasks.append(asyncio.create_task(self._watch(info, kind, version), name=f"record-{kind}"))

    async def _watch(self, info: ResourceInfo, kind: str, version: str) -> None:
        while True:
            try:
                async for event, body in self.kube.watch(info, version, namespace=self.namespace):
                    version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                    if event != "BOOKMARK":
                        self._record(kind, body, deleted=event == "DELETED")
            except KubeError as exc:
                # a gap in the record would make every ordering claim unsound: fail instead of relisting
                raise AssertionError(f"the watch of {kind} in {self.namespace} broke: {exc}") from exc

    def _record(self, kind: str, body: Body, *, deleted: bool) -> None:
        metadata = body["metadata"]
        name = str(metadata["name"])
        version = Version(int(metadata["resourceVersion"]), kind, name, None if deleted else body)
        self.versions.setdefault((kind, name), []).append(version)

    async def stop(self) -> None:
        """End the watches; a watch that broke while recording fails the test."""
        for task in self._tasks:
            task.cancel()
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    async def catch_up(self) -> None:
        """Wait until every watched object's current version has been recorded: since each kind's
        stream is in order, every earlier version of it has been recorded too."""
        for api_version, kind in WATCHED:
            info = await self.kube.resource(api_version, kind)
            items, _ = await self.kube.list(info, namespace=self.namespace)
            for item in items:
                name, rv = str(item["metadata"]["name"]), int(item["metadata"]["resourceVersion"])

                async def seen(kind: str = kind, name: str = name, rv: int = rv) -> bool:
                    return any(v.rv >= rv for v in self.versions.get((kind, name), []))

                await eventually(seen, timeout=30, what=f"the watch to deliver {kind}/{name}@{rv}")

    def created(self, kind: str, name: str) -> int | None:
        """The resourceVersion at which the object first appeared (None: never seen)."""
        versions = self.versions.get((kind, name))
        return versions[0].rv if versions else None

    def at(self, kind: str, name: str, rv: int) -> Body | None:
        """The object as it was at revision ``rv`` (None: absent then)."""
        state: Body | None = None
        for version in self.versions.get((kind, name), []):
            if version.rv > rv:
                break
            state = version.body
        return state

    def timeline(self, *keys: tuple[str, str]) -> list[Version]:
        """Every version of the given objects, in revision order."""
        return sorted((v for key in keys for v in self.versions.get(key, [])), key=lambda v: v.rv)


def wave_violations(manifests: list[Manifest], recorder: Recorder) -> list[str]:
    """Objects (of the watched kinds) created while an object of a lower wave was not healthy yet."""
    watched = {kind for _, kind in WATCHED}
    gated = [m for m in manifests if m.key.kind in watched and m.key.namespace == recorder.namespace]
    violations = []
    for later in gated:
        created = recorder.created(later.key.kind, later.key.name)
        assert created is not None, f"{later.key} was never seen by the watch"
        for earlier in gated:
            if wave(earlier) >= wave(later):
                continue
            health = assess(recorder.at(earlier.key.kind, earlier.key.name, created))
            if not health.ready:
                violations.append(
                    f"{later.key} (wave {wave(later)}) created at revision {created} while {earlier.key} "
                    f"(wave {wave(earlier)}) was {health.status.value}: {health.message}"
                )
    return violations


def expected_replicas(manifests: list[Manifest]) -> dict[tuple[str, str], int]:
    """Replicas each workload must run once synced: Git's value, or for an autoscaled one its HPA's
    minimum (reconciler creates it there and then leaves replicas to the HPA)."""
    by_key = {m.key: m for m in manifests}
    autoscaled = hpa_targets(manifests)
    expected = {}
    for manifest in manifests:
        key = manifest.key
        if key.kind not in ("Deployment", "StatefulSet"):
            continue
        declared = (manifest.body.get("spec") or {}).get("replicas")
        if key in autoscaled:
            minimum = int(by_key[autoscaled[key]].body["spec"].get("minReplicas", 1))
            expected[(key.kind, key.name)] = max(minimum, int(declared)) if declared is not None else minimum
        else:
            expected[(key.kind, key.name)] = int(declared) if declared is not None else 1
    return expected


# -- tests ------------------------------------------------------------------------------------------------
@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of this repository's environments/ that a test may edit (the render root is its parent)."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "environments", root / "environments")
    return root


async def test_every_overlay_passes_a_server_side_dry_run(
    kube: KubeClient, kubeconfig: Path, render_options: RenderOptions
) -> None:
    """`reconciler diff` of every overlay (server-side dry-run; objects of namespaces that do not exist
    yet are validated in a stand-in namespace) exits 0 or 1, never 2, and names no refused object.
    Runs first, before the other tests have created (and started deleting) the overlays' namespaces."""
    cleanup = Cleanup(kube)
    async with running_engine(kube) as engine:
        await sync_addons(engine, render_options)
        for overlay in OVERLAYS:
            await cleanup.await_absent(await render(engine, ROOT / "environments", overlay, render_options))
    semaphore = asyncio.Semaphore(3)

    async def diff(overlay: str) -> tuple[str, int, str]:
        async with semaphore:
            process = await asyncio.create_subprocess_exec(
                str(ROOT / ".venv/bin/reconciler"),
                "diff",
                str(ROOT / "environments" / overlay),
                "--kubeconfig",
                str(kubeconfig),
                "--environment",
                env_name(overlay if overlay == ADDONS else f"diff-{overlay}"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "RECONCILER_KUSTOMIZE": str(render_options.kustomize)},
            )
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
            return overlay, int(process.returncode or 0), stderr.decode(errors="replace")

    results = await asyncio.gather(*(diff(overlay) for overlay in OVERLAYS))
    failures = [
        f"{overlay}: exit {code}: {stderr[-2000:]}" for overlay, code, stderr in results if code not in (0, 1)
    ]
    assert failures == []
    for overlay, _, stderr in results:
        assert "refused" not in stderr, f"{overlay}: {stderr[-2000:]}"


async def test_crds_and_custom_resources_arrive_in_one_sync(
    kube: KubeClient, cleanup: Cleanup, render_options: RenderOptions, repo_copy: Path
) -> None:
    """cluster-addons and media/staging as one render, on a cluster without the CRDs: one sync applies
    the CRDs, waits until they are Established, then the VirtualService, DestinationRules,
    PeerAuthentication and ServiceMonitors; everything Healthy."""
    await delete_addon_crds(kube)
    together = repo_copy / "together"
    together.mkdir()
    (together / "kustomization.yaml").write_text(
        "resources:\n  - ../environments/cluster-addons/crds\n  - ../environments/media/staging\n"
    )
    async with running_engine(kube) as engine:
        manifests = await render(engine, repo_copy, "together", render_options)
        kinds = {m.key.kind for m in manifests}
        assert {"CustomResourceDefinition", "VirtualService", "PeerAuthentication", "ServiceMonitor"} <= kinds
        await prepare(kube, cleanup, manifests, env_name("pv"))
        result = await sync(engine, repo_copy, "together", render_options, env_name("crds-together"))
    try:
        await _check_crds_and_custom_resources(kube, result)
    finally:
        # this environment owns the CRDs now: remove them, so the add-on environment creates (and owns)
        # them again in the tests that need them
        await delete_addon_crds(kube)


async def delete_addon_crds(kube: KubeClient) -> None:
    """Delete the add-on CRDs and wait until they are gone."""
    for name in ADDON_CRDS:
        await kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name)
    for name in ADDON_CRDS:

        async def gone(name: str = name) -> bool:
            return await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name) is None

        await eventually(gone, timeout=GONE_TIMEOUT, what=f"CRD {name} to be deleted")


async def _check_crds_and_custom_resources(kube: KubeClient, result: SyncResult) -> None:
    assert result.ok, result.message
    assert result.health == HealthStatus.HEALTHY
    created = {str(e.key) for e in result.changeset.by_action(Action.CREATED)}
    assert {f"CustomResourceDefinition/{name}" for name in ADDON_CRDS} <= created
    assert {
        "VirtualService/media-staging/media",
        "DestinationRule/media-staging/api-service",
        "PeerAuthentication/media-staging/default",
        "ServiceMonitor/media-staging/api-service",
    } <= created
    for name in ADDON_CRDS:
        crd = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", name)
        assert crd is not None
        assert assess(crd).status == HealthStatus.HEALTHY, crd.get("status")
    virtual_service = await kube.get("networking.istio.io/v1", "VirtualService", "media-staging", "media")
    assert virtual_service is not None
    assert virtual_service["spec"]["hosts"] == ["media.staging.example.com"]
    peer = await kube.get("security.istio.io/v1", "PeerAuthentication", "media-staging", "default")
    assert peer is not None
    assert peer["spec"]["mtls"] == {"mode": "STRICT"}
    monitors, _ = await kube.list(
        await kube.resource("monitoring.coreos.com/v1", "ServiceMonitor"), namespace="media-staging"
    )
    assert sorted(m["metadata"]["name"] for m in monitors) == [
        "api-service",
        "media-service",
        "media-workers",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_environment_syncs_to_healthy(
    overlay: str, kube: KubeClient, cleanup: Cleanup, render_options: RenderOptions
) -> None:
    """One sync from nothing: Ready and Healthy, every object of the render applied, every workload ready
    at its overlay's replica count, and no Deployment, StatefulSet, Service or PVC created before every
    one of those in the waves below it was healthy."""
    root = ROOT / "environments"
    async with running_engine(kube) as engine:
        if overlay.split("/", maxsplit=1)[0] in NEEDS_ADDONS:
            await sync_addons(engine, render_options)
        manifests = await render(engine, root, overlay, render_options)
        await prepare(kube, cleanup, manifests, env_name("pv"))
        namespaces = namespaces_of(manifests)
        recorder = Recorder(kube, namespaces[0]) if namespaces else None
        if recorder:
            await recorder.start()
        try:
            result = await sync(engine, root, overlay, render_options, env_name(overlay))
            assert result.ok, result.message
            if recorder:
                await recorder.catch_up()
        finally:
            if recorder:
                await recorder.stop()
    assert result.health == HealthStatus.HEALTHY
    actions = {e.action for e in result.changeset.entries}
    assert actions <= {Action.CREATED, Action.CONFIGURED, Action.UNCHANGED}, result.changeset.summary()
    assert len(result.changeset.entries) == len(manifests)
    for (kind, name), replicas in expected_replicas(manifests).items():
        live = await kube.get("apps/v1", kind, namespaces[0], name)
        assert live is not None
        assert live["spec"]["replicas"] == replicas, f"{kind}/{name}"
        assert live["status"].get("readyReplicas") == replicas, f"{kind}/{name}: {live['status']}"
    if recorder:
        assert wave_violations(manifests, recorder) == []


# -- blue/green -------------------------------------------------------------------------------------------
def switch_to_green(kustomization: Path, new_tag: str) -> None:
    """Edit a detection overlay: green gets ``new_tag`` and becomes the live slot (Service and HPA)."""
    text = kustomization.read_text()
    edits = [
        (r"(- name: detection-api-green\n\s+newName: \S+\n\s+newTag: )\S+", rf"\g<1>{new_tag}"),
        (r"(path: /spec/selector/slot, value: )blue", r"\g<1>green"),
        (r"(path: /spec/scaleTargetRef/name, value: )detection-api-blue", r"\g<1>detection-api-green"),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"{pattern} matched {count} times in {kustomization}"
    kustomization.write_text(text)


def unhealthy_live_slot(recorder: Recorder, slot: str, image: str) -> tuple[list[str], bool]:
    """Replay the Service and the slot's Deployment in revision order. Returns every moment the Service
    selected ``slot`` while that Deployment was not healthy on ``image``, and whether the Deployment was
    ever seen rolling out ``image`` (not healthy yet) at all."""
    service, deployment = ("Service", "detection-api"), ("Deployment", f"detection-api-{slot}")
    live_service: Body | None = None
    live_deployment: Body | None = None
    violations: list[str] = []
    rolled_out = False
    for version in recorder.timeline(service, deployment):
        if (version.kind, version.name) == service:
            live_service = version.body
        else:
            live_deployment = version.body
        running = (
            live_deployment["spec"]["template"]["spec"]["containers"][0]["image"] if live_deployment else None
        )
        health = assess(live_deployment)
        if running == image and not health.ready:
            rolled_out = True
        selected = ((live_service or {}).get("spec") or {}).get("selector", {}).get("slot")
        if selected == slot and (running != image or not health.ready):
            violations.append(
                f"revision {version.rv}: the Service selects {slot} while {deployment[1]} runs {running} "
                f"and is {health.status.value} ({health.message})"
            )
    return violations, rolled_out


@pytest.mark.parametrize(
    ("overlay", "gated"),
    [("detection/staging", True), ("detection/production", False)],
    ids=["with-waves", "control-without-waves"],
)
async def test_blue_green_switch_never_selects_an_unhealthy_slot(
    overlay: str,
    gated: bool,
    kube: KubeClient,
    cleanup: Cleanup,
    render_options: RenderOptions,
    repo_copy: Path,
) -> None:
    """Blue live, then one commit: green gets a new image and becomes live. Replayed from the watch, the
    Service never selects green before green runs the new image and is healthy. The control moves the
    Service into the Deployments' wave (no health gate between them) and must be caught doing exactly that,
    which shows the replay can see the failure it guards against."""
    path = f"environments/{overlay}"
    new_image = "ghcr.io/example/detection/api:9.9.9-switch"
    environment = env_name(f"switch-{overlay}")
    if not gated:
        service = repo_copy / "environments/detection/base/service.yaml"
        text, count = re.subn(r'reconciler.dev/wave: "2"', 'reconciler.dev/wave: "1"', service.read_text())
        assert count == 1
        service.write_text(text)
    async with running_engine(kube) as engine:
        manifests = await render(engine, repo_copy, path, render_options)
        await prepare(kube, cleanup, manifests, env_name("pv"))
        first = await sync(engine, repo_copy, path, render_options, environment)
        assert first.ok, first.message
        namespace = namespaces_of(manifests)[0]
        live = await kube.get("v1", "Service", namespace, "detection-api")
        assert live is not None
        assert live["spec"]["selector"]["slot"] == "blue"

        switch_to_green(repo_copy / path / "kustomization.yaml", new_image.rsplit(":", 1)[1])
        recorder = Recorder(kube, namespace)
        await recorder.start()
        try:
            second = await sync(engine, repo_copy, path, render_options, environment)
            assert second.ok, second.message
            await recorder.catch_up()
        finally:
            await recorder.stop()
    live = await kube.get("v1", "Service", namespace, "detection-api")
    assert live is not None
    assert live["spec"]["selector"]["slot"] == "green"
    hpa = await kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "detection-api")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "detection-api-green"
    violations, rolled_out = unhealthy_live_slot(recorder, "green", new_image)
    assert rolled_out, "the watch never saw green rolling out the new image"
    if gated:
        assert violations == []
    else:
        assert violations, "without the wave gate the Service should have moved before green was ready"
