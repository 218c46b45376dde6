"""Two replicas with leader election: only the leader writes; when it dies, the other takes over."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import DaemonProcess, Repo, daemon_config
from tests.e2e.test_daemon import environment_files
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster

WRITES = ("PATCH", "POST", "PUT", "DELETE")


def writes(daemon: DaemonProcess) -> float:
    """Successful writes this replica made to the cluster, except to its own Lease (nudges, renewals)."""
    return sum(daemon.metric("reconciler_kube_requests_total", verb=verb) for verb in WRITES)


def test_only_the_leader_writes_and_a_follower_takes_over_after_sigkill(
    tmp_path: Path, repo: Repo, kubeconfig: Path, toolchain: Toolchain, namespace: str, kube_sync: Any
) -> None:
    """Two replicas: the follower writes no object; SIGKILL the leader; the follower leads and converges."""
    environment_files(repo, namespace)
    repo.commit_and_push("initial")
    lease = {
        "enabled": True,
        "lease_name": f"leader-{namespace[-20:]}",
        "lease_duration": 4,
        "renew_interval": 0.5,
    }
    replicas = []
    for index in range(2):
        replica = daemon_config(
            tmp_path,
            repo_url=repo.url,
            kubeconfig=kubeconfig,
            poll_interval="1h",
            name=f"replica-{index}",
            environments=[{"name": f"{namespace[:40]}-s", "path": "apps/staging"}],
            leader_election={**lease, "identity": f"replica-{index}"},
        )
        replicas.append(replica)
    replicas[0].start(toolchain)
    wait_for(lambda: replicas[0].metric("reconciler_leader") == 1, what="replica 0 to lead")
    replicas[1].start(toolchain)
    repo.install_hook(replicas[1].port, tmp_path / "webhook-secret")  # webhooks reach the follower
    try:
        wait_for(lambda: kube_sync("v1", "ConfigMap", namespace, "staging-settings"), what="the first sync")
        leader, follower = replicas
        assert follower.metric("reconciler_leader") == 0
        follower_writes = writes(follower)

        environment_files(repo, namespace, note="via-follower")
        started = time.monotonic()
        repo.commit_and_push("webhook to the follower")
        wait_for(
            lambda: (
                kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"]
                == {"note": "via-follower"}
            ),
            what="the leader to act on a webhook the follower received",
        )
        print(f"webhook to follower -> applied by the leader in {time.monotonic() - started:.2f} s")
        # the follower's only writes are its nudge of the Lease, never an object
        assert writes(follower) - follower_writes <= 1

        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        killed = time.monotonic()
        wait_for(
            lambda: follower.metric("reconciler_leader") == 1, timeout=4 + 5, what="the follower to take over"
        )
        print(f"takeover {time.monotonic() - killed:.2f} s after SIGKILL (lease duration 4 s)")
        environment_files(repo, namespace, note="after-failover")
        repo.commit_and_push("after failover")
        wait_for(
            lambda: (
                kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"]
                == {"note": "after-failover"}
            ),
            what="the new leader to converge",
        )
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.stop()
