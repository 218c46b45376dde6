"""The engine through its command line: secrets never printed, exit codes, and SIGKILL at random points."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.inventory import InventoryStore
from reconciler.kube import KubeClient
from reconciler.objects import ObjectKey
from reconciler.render import RenderOptions
from tests.support import EnvRepo, config_map, deployment

pytestmark = pytest.mark.cluster

CANARY = "CANARY-7c1e-never-print-me"


@pytest.fixture
def repo(tmp_path: Path, namespace: str, toolchain: Toolchain) -> EnvRepo:
    return EnvRepo(tmp_path, namespace, RenderOptions(kustomize=toolchain.kustomize))


def cli_env(toolchain: Toolchain) -> dict[str, str]:
    return {**os.environ, "RECONCILER_KUSTOMIZE": str(toolchain.kustomize)}


async def run_cli(toolchain: Toolchain, *args: str) -> tuple[int, str]:
    """Run `reconciler ARGS`, returning the exit status and stdout+stderr together."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reconciler.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(toolchain),
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, output.decode()


def secret(namespace: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": namespace},
        "stringData": {"password": value},
    }


def assert_no_canary(text: str) -> None:
    for needle in (CANARY, base64.b64encode(CANARY.encode()).decode()[:20]):
        assert needle not in text


async def test_canary_secret_value_appears_in_no_output(
    repo: EnvRepo, toolchain: Toolchain, kubeconfig: Path, namespace: str
) -> None:
    """sync (text, json, debug logs), diff and a failing sync never print a Secret's value."""
    common = [str(repo.path), "--environment", repo.name, "--kubeconfig", str(kubeconfig)]
    repo.set_objects([secret(namespace, CANARY), config_map("cfg", namespace)])
    code, output = await run_cli(toolchain, "sync", *common, "--log-level", "debug", "-o", "json")
    assert code == 0, output
    assert_no_canary(output)

    code, output = await run_cli(toolchain, "diff", *common)
    assert code == 0, output

    repo.set_objects([secret(namespace, CANARY + "-rotated"), config_map("cfg", namespace)])
    code, output = await run_cli(toolchain, "diff", *common)
    assert code == 1, output
    assert f"Secret/{namespace}/creds" in output
    assert "<redacted sha256:" in output
    assert_no_canary(output)

    code, output = await run_cli(toolchain, "sync", *common, "--log-level", "debug")
    assert code == 0, output
    assert "configured Secret" in output
    assert_no_canary(output)

    broken = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": namespace},
        "data": {"password": CANARY + "!"},
    }
    repo.set_objects([broken, config_map("cfg", namespace)])
    code, output = await run_cli(toolchain, "sync", *common, "--log-level", "debug", "-o", "json")
    assert code == 1, output
    assert "ValidationFailed" in output
    assert f"Secret/{namespace}/creds" in output
    assert_no_canary(output)


async def test_diff_exit_status_is_two_on_error(
    repo: EnvRepo, toolchain: Toolchain, tmp_path: Path, namespace: str
) -> None:
    """An unreadable kubeconfig is an error (2) with a message, not a traceback."""
    repo.set_objects([config_map("cfg", namespace)])
    code, output = await run_cli(toolchain, "diff", str(repo.path), "--kubeconfig", str(tmp_path / "missing"))
    assert code == 2, output
    assert output.startswith("error: cannot load kubeconfig")
    assert "Traceback" not in output


async def test_render_prints_objects_in_apply_order_without_a_cluster(
    repo: EnvRepo, toolchain: Toolchain, namespace: str
) -> None:
    """render needs no cluster and prints Namespaces before ConfigMaps before Deployments."""
    repo.set_objects(
        [
            deployment("api", namespace),
            config_map("cfg", namespace),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        ]
    )
    code, output = await run_cli(toolchain, "render", str(repo.path))
    assert code == 0, output
    kinds = [line.split(": ")[1] for line in output.splitlines() if line.startswith("kind: ")]
    assert kinds == ["Namespace", "ConfigMap", "Deployment"]
    second = await run_cli(toolchain, "render", str(repo.path))
    assert second == (code, output)


async def kill_after(process: asyncio.subprocess.Process, marker: str, rng: random.Random) -> None:
    """SIGKILL ``process`` 0-0.2 s after its first stderr line starting with ``marker`` (unless it ended
    first); its stderr is read to the end either way."""
    assert process.stderr is not None
    async for line in process.stderr:
        if line.decode(errors="replace").startswith(marker):
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            break
    await process.stderr.read()


async def test_sync_killed_at_random_points_converges_with_an_exact_inventory(
    repo: EnvRepo, toolchain: Toolchain, kubeconfig: Path, kube: KubeClient, namespace: str
) -> None:
    """SIGKILL during syncs of changing revisions; the next full sync converges and deletes nothing else."""
    rng = random.Random(20261122)  # noqa: S311 - reproducible choices; kill timing varies anyway
    universe = [f"cm-{i:02d}" for i in range(16)]
    bystander = config_map("bystander", namespace)
    await kube.apply(
        bystander,
    )
    copier = config_map("copier", namespace)
    copier["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "reconciler"}
    copier["metadata"]["annotations"] = {"reconciler.dev/environment": repo.name}
    await kube.apply(copier)

    current = set(universe[:12])
    common = [str(repo.path), "--environment", repo.name, "--kubeconfig", str(kubeconfig), "--timeout", "30"]
    outcomes: list[int] = []
    for trial in range(6):
        # change a few objects per revision: some removed, some added, one edited
        removed = set(rng.sample(sorted(current), 2))
        added = set(rng.sample(sorted(set(universe) - current), 2))
        current = (current - removed) | added
        objects = [config_map(name, namespace, rev=str(trial)) for name in sorted(current)]
        objects.append(deployment("api", namespace, image=f"registry.invalid/app:{trial}"))
        repo.set_objects(objects)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reconciler.cli",
            "sync",
            *common,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(toolchain),
        )
        # killed at a random point of the pipeline, found from its progress lines rather than after a
        # fixed delay (a faster sync simply finished first): after the render (validating or writing),
        # after the validation (writing), or after the apply (waiting for the rollout, the inventory's
        # final write still to come)
        await kill_after(process, rng.choice(("rendered ", "validated ", "stage wave 0: applied")), rng)
        outcomes.append(await process.wait())
    print(f"sync outcomes per trial (-9 = killed): {outcomes}")
    assert outcomes.count(-signal.SIGKILL) >= 2, outcomes

    code, output = await run_cli(toolchain, "sync", *common)
    assert code == 0, output

    desired = {ObjectKey("", "ConfigMap", namespace, name) for name in current}
    desired.add(ObjectKey("apps", "Deployment", namespace, "api"))
    inventory = await InventoryStore(kube).load(repo.name)
    assert inventory is not None
    assert inventory.keys == desired
    info = await kube.resource("v1", "ConfigMap")
    items, _ = await kube.list(info, namespace=namespace)
    live_names = {item["metadata"]["name"] for item in items}
    assert {name for name in universe if name in live_names} == current
    assert {"bystander", "copier"} <= live_names
    for name in current:
        live = await kube.get("v1", "ConfigMap", namespace, name)
        assert live is not None
        assert live["data"] == {"rev": "5"}
