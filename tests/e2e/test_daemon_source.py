"""The daemon's Git source: polling without webhooks, and a Git server that goes away and comes back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import free_port
from tests.e2e.conftest import GitServer, Repo, daemon_config, git
from tests.e2e.test_daemon import environment_files
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster


def test_polling_picks_a_change_up_without_a_webhook(
    tmp_path: Path, repo: Repo, kubeconfig: Path, toolchain: Toolchain, namespace: str, kube_sync: Any
) -> None:
    """With no hook installed, a push lands within the poll interval plus jitter."""
    environment_files(repo, namespace)
    repo.commit_and_push("initial")
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        poll_interval="2s",
        environments=[{"name": f"{namespace[:40]}-s", "path": "apps/staging"}],
    )
    daemon.start(toolchain)
    try:
        wait_for(lambda: kube_sync("v1", "ConfigMap", namespace, "staging-settings"), what="the first sync")
        environment_files(repo, namespace, note="polled")
        pushed = time.monotonic()
        repo.commit_and_push("no webhook for this one")
        wait_for(
            lambda: kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"] == {"note": "polled"},
            timeout=2 * 1.1 + 10,
            what="the poll to pick the change up",
        )
        print(f"push -> applied by polling in {time.monotonic() - pushed:.2f} s (interval 2 s, jitter 10%)")
    finally:
        assert daemon.stop() == 0


def test_git_server_down_keeps_the_last_state_reports_stale_and_recovers(
    tmp_path: Path, kubeconfig: Path, toolchain: Toolchain, namespace: str, kube_sync: Any
) -> None:
    """Fetch failures back off, keep the last good revision and show stale; then the daemon converges."""
    server = GitServer(tmp_path / "server", free_port())
    server.base.mkdir()
    server.start()
    git("init", "-q", "--bare", "-b", "main", str(server.base / "envs.git"), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", server.url("envs"), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    repo = Repo(server, "envs", work)
    environment_files(repo, namespace)
    repo.commit_and_push("initial")
    name = f"{namespace[:40]}-s"
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        poll_interval="1s",
        environments=[{"name": name, "path": "apps/staging"}],
    )
    daemon.start(toolchain)
    try:
        wait_for(lambda: daemon.environment(name).get("condition") == "Ready", what="the first sync")
        good = daemon.environment(name)["revision"]
        server.stop()
        status = wait_for(
            lambda: (s := daemon.environment(name)) and s["gitStale"] and s, what="status to say stale"
        )
        assert "fetching git://127.0.0.1" in status["gitError"]
        assert status["revision"] == good
        assert daemon.get_status("/readyz") == 503
        assert "git: stale" in daemon.get_json("/readyz")["reasons"][0]
        assert kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"] == {"note": "1"}
        failures = daemon.metric("reconciler_git_fetches_total", result="error")
        time.sleep(6)  # an observation window: a 1 s poll without backoff would fail 6 more times
        assert daemon.metric("reconciler_git_fetches_total", result="error") - failures <= 4
        assert daemon.environment(name)["gitFailures"] >= 2

        server.start()
        environment_files(repo, namespace, note="back")
        sha = repo.commit_and_push("after the outage")
        wait_for(
            lambda: (
                daemon.environment(name)["revision"] == sha
                and daemon.environment(name)["condition"] == "Ready"
            ),
            timeout=60,
            what="convergence after the server came back",
        )
        assert not daemon.environment(name)["gitStale"]
        assert daemon.get_status("/readyz") == 200
        assert kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"] == {"note": "back"}
    finally:
        daemon.stop()
        server.stop()
