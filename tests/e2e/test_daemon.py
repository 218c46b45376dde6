"""The daemon end to end: a real Git server, signed webhooks from a post-receive hook, the local cluster."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import DaemonProcess, Repo, daemon_config
from tests.helpers import wait_for
from tests.support import config_map, deployment

pytestmark = pytest.mark.cluster


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
        webhooks={"body_timeout": 2},
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
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    table = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "status", "--server", daemon.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    row = next(line for line in table.splitlines() if line.startswith(staging))
    assert sha[:12] in row
    assert "Synced" in row
    assert "Healthy" in row
    assert daemon.metric("reconciler_webhook_requests_total", provider="github", result="accepted") >= 1


def github_delivery(
    daemon: DaemonProcess,
    body: bytes,
    *,
    delivery: str,
    signature: str | None = None,
    event: str = "push",
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    import json  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from reconciler.server.webhooks import sign  # noqa: PLC0415
    from tests.e2e.conftest import SECRET  # noqa: PLC0415

    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature if signature is not None else f"sha256={sign(SECRET, body)}",
        **(extra or {}),
    }
    request = urllib.request.Request(daemon.url + "/webhooks/git", data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_burst_of_twenty_webhooks_gives_one_fetch_and_one_sync_per_affected_environment(
    daemon: DaemonProcess, repo: Repo, namespace: str
) -> None:
    """20 deliveries of one push in a second: one fetch; only the environment whose inputs changed syncs."""
    import json  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    staging, production = env_names(daemon)
    wait_for(
        lambda: all(daemon.environment(n).get("condition") == "Ready" for n in (staging, production)),
        what="the first syncs",
    )
    # make the staging overlay alone change, and push without the hook
    hook = repo.server.base / f"{repo.name}.git" / "hooks" / "post-receive"
    hook.unlink()
    repo.write(
        "apps/staging/kustomization.yaml",
        "resources: [../base]\nnamePrefix: staging-\ncommonAnnotations: {team: blue}\n",
    )
    sha = repo.commit_and_push("staging only")
    fetches = daemon.metric("reconciler_git_fetches_total")
    syncs = {n: daemon.environment(n)["syncs"] for n in (staging, production)}
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: github_delivery(daemon, body, delivery=f"burst-{i}")[0], range(20)))
    assert results.count(202) == 20, results
    wait_for(
        lambda: (
            daemon.environment(staging)["revision"] == sha
            and daemon.environment(staging)["syncs"] > syncs[staging]
        ),
        what="staging to sync the new revision",
    )
    wait_for(lambda: daemon.environment(staging)["condition"] == "Ready", what="staging Ready")
    assert daemon.metric("reconciler_git_fetches_total") - fetches == 1
    assert daemon.environment(staging)["syncs"] - syncs[staging] == 1
    assert daemon.environment(production)["syncs"] == syncs[production]


def test_hostile_webhooks_are_refused_without_syncing(daemon: DaemonProcess, repo: Repo) -> None:
    """Bad or missing signatures, replays, huge or dripping bodies, bad JSON, other events: no sync."""
    import json  # noqa: PLC0415
    import socket  # noqa: PLC0415

    staging, _ = env_names(daemon)
    wait_for(lambda: daemon.environment(staging).get("condition") == "Ready", what="the first sync")
    fetches = daemon.metric("reconciler_git_fetches_total")
    syncs = daemon.environment(staging)["syncs"]
    rss_before = _rss(daemon)
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    assert github_delivery(daemon, body, delivery="bad-sig", signature="sha256=" + "0" * 64)[0] == 401
    assert github_delivery(daemon, body, delivery="no-sig", signature="")[0] == 401
    assert github_delivery(daemon, b"{not json", delivery="bad-json")[0] == 400
    assert github_delivery(daemon, body, delivery="issue", event="issues")[0] == 202
    assert github_delivery(daemon, body, delivery="ping", event="ping")[0] == 200
    other_branch = json.dumps({"ref": "refs/heads/feature", "after": "b" * 40}).encode()
    assert github_delivery(daemon, other_branch, delivery="feature")[0] == 202
    assert (
        github_delivery(daemon, b"{}", delivery="unknown", extra={"X-GitHub-Event": "push"}, signature="x")[0]
        == 401
    )
    # 10 MB body: refused by its Content-Length before it is read
    huge = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    assert github_delivery(daemon, huge, delivery="huge")[0] == 413
    # a body that drips: refused after the body timeout
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as conn:
        conn.sendall(
            b"POST /webhooks/git HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
            b"X-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply and time.monotonic() - started < 25:
            conn.sendall(b" ")
            time.sleep(0.2)
            conn.settimeout(0.01)
            with contextlib.suppress(TimeoutError):
                reply += conn.recv(4096)
            conn.settimeout(30)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    # a replayed delivery (same id as an accepted one) is a no-op
    valid = json.dumps({"ref": "refs/heads/main", "after": daemon.environment(staging)["revision"]}).encode()
    first = github_delivery(daemon, valid, delivery="replay-1")
    assert first[0] in (200, 202)
    assert github_delivery(daemon, valid, delivery="replay-1") == (200, {"result": "duplicate"})

    assert daemon.get_status("/healthz") == 200
    assert daemon.metric("reconciler_git_fetches_total") == fetches
    assert daemon.environment(staging)["syncs"] == syncs
    assert _rss(daemon) - rss_before < 64 * 1024 * 1024


def _rss(daemon: DaemonProcess) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_sigterm_exits_cleanly_within_ten_seconds_with_the_inventory_intact(
    daemon: DaemonProcess, repo: Repo, namespace: str, kube_sync: Any
) -> None:
    """SIGTERM while a sync waits on health: exit 0 within 10 s; the inventory still lists every object."""
    import json  # noqa: PLC0415

    staging, _ = env_names(daemon)
    wait_for(lambda: daemon.environment(staging).get("condition") == "Ready", what="the first sync")
    stuck = deployment("stuck", namespace)
    stuck["spec"]["template"]["spec"]["nodeSelector"] = {"no-such-node": "true"}
    repo.write(
        "apps/base/app.yaml",
        [config_map("settings", namespace, note="1"), deployment("api", namespace), stuck],
    )
    repo.commit_and_push("add a deployment that never becomes healthy")
    wait_for(
        lambda: kube_sync("apps/v1", "Deployment", namespace, "staging-stuck"), what="the stuck deployment"
    )
    started = time.monotonic()
    code = daemon.stop()
    elapsed = time.monotonic() - started
    assert code == 0, daemon.log()
    assert elapsed < 10, elapsed
    inventory = kube_sync("v1", "ConfigMap", "reconciler-system", f"reconciler-inventory-{staging}")
    rows = json.loads(inventory["data"]["inventory.json"])["objects"]
    assert {(row[1], row[3]) for row in rows} >= {
        ("ConfigMap", "staging-settings"),
        ("Deployment", "staging-api"),
        ("Deployment", "staging-stuck"),
    }
