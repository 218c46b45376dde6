"""environments/ rendered by `reconciler render` (the pinned kustomize, no cluster): deterministic output,
and the rules every system follows (non-root, resources, probes, placeholder Secrets, no shared
cluster-scoped objects between staging and production, the waves that make start-up order safe)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster.build import Toolchain

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("tams", "media", "access", "detection", "aiplus")
OVERLAYS = ["cluster-addons/crds", *(f"{s}/{o}" for s in SYSTEMS for o in ("staging", "production"))]
WAVE = "reconciler.dev/wave"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY|KEYS|DATABASE_URL")
_rendered: dict[str, str] = {}


async def cli_render(toolchain: Toolchain, overlay: str, root: Path = ROOT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/reconciler"),
        "render",
        str(root / "environments" / overlay),
        "--repo-root",
        str(root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RECONCILER_KUSTOMIZE": str(toolchain.kustomize)},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return int(process.returncode or 0), stdout.decode(), stderr.decode(errors="replace")


async def objects(toolchain: Toolchain, overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects as `reconciler render` prints them (rendered once per test session)."""
    if overlay not in _rendered:
        code, stdout, stderr = await cli_render(toolchain, overlay)
        assert code == 0, stderr
        _rendered[overlay] = stdout
    return [doc for doc in yaml.safe_load_all(_rendered[overlay]) if doc]


def name_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def wave(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(WAVE, "0"))


def by_name(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second checkout of environments/: another path, other inode and modification times."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "environments", root / "environments")
    return root


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_render_is_deterministic(toolchain: Toolchain, checkout: Path, overlay: str) -> None:
    """`reconciler render` of the repository and of another checkout print the same bytes (and a real
    render, not an empty one)."""
    (code_a, first, err_a), (code_b, second, err_b) = await asyncio.gather(
        cli_render(toolchain, overlay), cli_render(toolchain, overlay, checkout)
    )
    assert (code_a, code_b) == (0, 0), err_a + err_b
    assert first == second
    assert len([doc for doc in yaml.safe_load_all(first) if doc]) >= 4
    _rendered[overlay] = first


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_workloads_are_hardened_and_sized(toolchain: Toolchain, overlay: str) -> None:
    """Every pod runs as non-root with the restricted settings; every container has requests and limits
    for CPU and memory; every Deployment container has liveness and readiness probes; every image is a
    pinned tag of ghcr.io/example."""
    problems = []
    for obj in await objects(toolchain, overlay):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{name_of(obj)}: runAsNonRoot is not true")
        if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name_of(obj)}: no RuntimeDefault seccomp profile")
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name_of(obj)} container {container['name']}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(bound) or {}):
                    problems.append(f"{where}: {bound} lack cpu or memory")
            context = container.get("securityContext") or {}
            if context.get("allowPrivilegeEscalation") is not False or context.get("capabilities") != {
                "drop": ["ALL"]
            }:
                problems.append(f"{where}: privilege escalation allowed or capabilities kept")
            if obj["kind"] == "Deployment" and not (
                container.get("livenessProbe") and container.get("readinessProbe")
            ):
                problems.append(f"{where}: missing liveness or readiness probe")
            image = str(container["image"])
            if not re.fullmatch(r"ghcr\.io/example/[a-z0-9./-]+:[0-9][A-Za-z0-9.-]*", image):
                problems.append(f"{where}: image {image} is not a pinned ghcr.io/example tag")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_secrets_hold_placeholders_only(toolchain: Toolchain, overlay: str) -> None:
    """Every secret-looking value of every Secret is an obvious REPLACE-ME placeholder."""
    leaks = []
    for obj in await objects(toolchain, overlay):
        if obj["kind"] != "Secret":
            continue
        assert "data" not in obj, f"{name_of(obj)}: use stringData placeholders, not base64 data"
        for key, value in (obj.get("stringData") or {}).items():
            if SECRET_KEY.search(key) and "REPLACE-ME" not in str(value):
                leaks.append(f"{name_of(obj)}: {key}")
    assert leaks == []


@pytest.mark.parametrize("system", SYSTEMS)
async def test_staging_and_production_never_own_the_same_object(toolchain: Toolchain, system: str) -> None:
    """No object (namespaced ones by namespace, cluster-scoped ones by name) is in both overlays, and no
    system ships a CRD: CRDs belong to cluster-addons only."""
    staging = {name_of(o) for o in await objects(toolchain, f"{system}/staging")}
    production = {name_of(o) for o in await objects(toolchain, f"{system}/production")}
    assert staging & production == set()
    assert not any(n.startswith("CustomResourceDefinition/") for n in staging | production)
    for overlay, names in (("staging", staging), ("production", production)):
        cluster_scoped = [n for n in names if n.split("/")[1] == ""]
        assert all(overlay in n for n in cluster_scoped), cluster_scoped


async def test_cluster_addons_ship_the_crds_the_systems_use(toolchain: Toolchain) -> None:
    """Every custom resource kind of every overlay is served by a CRD of cluster-addons."""
    served = set()
    for crd in await objects(toolchain, "cluster-addons/crds"):
        spec = crd["spec"]
        for version in spec["versions"]:
            served.add((f"{spec['group']}/{version['name']}", spec["names"]["kind"]))
            assert version["schema"]["openAPIV3Schema"]["type"] == "object"
    builtin = re.compile(r"^(v1|(apps|batch|policy|autoscaling|[a-z.]+\.k8s\.io)/v\d+)$")
    used = {
        (o["apiVersion"], o["kind"])
        for overlay in OVERLAYS[1:]
        for o in await objects(toolchain, overlay)
        if not builtin.match(o["apiVersion"])
    }
    assert used, "no custom resources at all?"
    assert used <= served, used - served


async def test_access_layer_starts_infrastructure_first(toolchain: Toolchain) -> None:
    """Data stores < Kafka < services < gateway, in waves; the config the services read is in wave 0."""
    for overlay in ("access/staging", "access/production"):
        docs = await objects(toolchain, overlay)
        waves = {d["metadata"]["name"]: wave(d) for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
        stores = [waves[n] for n in ("postgres", "redis", "zookeeper")]
        services = [waves[n] for n in ("streaming", "auth", "entitlements", "metrics")]
        assert max(stores) < waves["kafka"] < min(services) <= max(services) < waves["gateway"], waves
        assert wave(by_name(docs, "ConfigMap", "service-urls")) < min(stores)


async def test_detection_moves_traffic_only_after_the_slots(toolchain: Toolchain) -> None:
    """The Service and the HPA follow the live slot, in a later wave than both slot Deployments, which
    come after the volumes they mount; the StorageClass is named per environment."""
    for overlay in ("detection/staging", "detection/production"):
        docs = await objects(toolchain, overlay)
        service, hpa = (
            by_name(docs, "Service", "detection-api"),
            by_name(docs, "HorizontalPodAutoscaler", "detection-api"),
        )
        live = service["spec"]["selector"]["slot"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"detection-api-{live}"
        slots = [by_name(docs, "Deployment", f"detection-api-{slot}") for slot in ("blue", "green")]
        claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert max(wave(c) for c in claims) < min(wave(s) for s in slots)
        assert max(wave(s) for s in slots) < min(wave(service), wave(hpa))
        classes = [d["metadata"]["name"] for d in docs if d["kind"] == "StorageClass"]
        assert classes == [f"detection-{overlay.split('/')[1]}-shared"]
        assert {c["spec"]["storageClassName"] for c in claims} == set(classes)


def test_aiplus_staging_declares_the_images_a_promotion_copies() -> None:
    """aiplus/staging's kustomization has `images:` entries with newTag for the api and web images."""
    kustomization = yaml.safe_load((ROOT / "environments/aiplus/staging/kustomization.yaml").read_text())
    images = {entry["name"]: entry.get("newTag") for entry in kustomization["images"]}
    assert set(images) == {"ghcr.io/example/aiplus/api", "ghcr.io/example/aiplus/web"}
    assert all(images.values()), images
