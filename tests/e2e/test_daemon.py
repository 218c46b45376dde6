"""The daemon end to end: a real Git server, signed webhooks from a post-receive hook, the local cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import DaemonProcess, Repo, daemon_config
from tests.support import config_map, deployment

pytestmark = pytest.mark.cluster


def wait_for(probe: Any, *, timeout: float = 30, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(interval)


def environment_files(
    repo: Repo, namespace: str, image: str = "registry.invalid/app:1", note: str = "1"
) -> None:
    """staging and production overlays of one small app, all in the test namespace."""
    repo.write("apps/base/kustomization.yaml", "resources: [app.yaml]\n")
    repo.write(
        "apps/base/app.yaml",
        [config_map("settings", namespace, note=note), deployment("api", namespace, image=image)],
    )
    for env in ("staging", "production"):
        repo.write(f"apps/{env}/kustomization.yaml", f"resources: [../base]\nnamePrefix: {env}-\n")


@pytest.fixture
def daemon(
    tmp_path: Path, repo: Repo, kubeconfig: Path, toolchain: Toolchain, namespace: str
) -> Iterator[DaemonProcess]:
    environment_files(repo, namespace)
    repo.commit_and_push("initial")
    process = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            {
                "name": f"{namespace}-staging"[:50].rstrip("-") + "-s",
                "path": "apps/staging",
                "health_timeout": 60,
            },
            {
                "name": f"{namespace}-production"[:50].rstrip("-") + "-p",
                "path": "apps/production",
                "health_timeout": 60,
            },
        ],
    )
    repo.install_hook(process.port, tmp_path / "webhook-secret")
    process.start(toolchain)
    yield process
    if process.process is not None and process.process.poll() is None:
        process.stop()


def env_names(daemon: DaemonProcess) -> list[str]:
    return [e["name"] for e in daemon.get_json("/api/v1/environments")["environments"]]


def test_pushed_commit_with_signed_webhook_is_applied(
    daemon: DaemonProcess, repo: Repo, kube_sync: Any, namespace: str
) -> None:
    """A push (whose hook sends a signed GitHub webhook) is fetched, synced and reported."""
    staging, _ = env_names(daemon)
    wait_for(lambda: daemon.environment(staging).get("condition") == "Ready", what="the first sync")
    environment_files(repo, namespace, note="2")
    started = time.monotonic()
    sha = repo.commit_and_push("change the note")
    wait_for(
        lambda: kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"] == {"note": "2"},
        what="the pushed change to be applied",
    )
    print(f"push -> applied in {time.monotonic() - started:.2f} s (poll interval is 1 h)")
    status = wait_for(
        lambda: (
            (s := daemon.environment(staging)) and s["revision"] == sha and s["condition"] == "Ready" and s
        ),
        what="status to show the new revision",
    )
    assert status["sync"] == "Synced"
    assert status["health"] == "Healthy"
    assert daemon.metric("reconciler_webhook_requests_total", provider="github", result="accepted") >= 1
