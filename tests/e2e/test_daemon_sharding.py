"""Scale-out: three replicas share 60 environments through member Leases and per-environment claims.

One journey on the local cluster: every environment owned by exactly one replica and the load
balanced; a push touching all 60 applied; SIGKILL a replica (its environments owned again and a push
lands within the lease duration + 5 s); bring it back (about a third moves back); SIGTERM another
(handover in under 3 s). Throughout, the API server's audit log (each replica has its own user agent)
shows no environment written by two replicas in overlapping time windows.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import signal
import time
from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import Cluster
from tests.e2e.conftest import Admin, DaemonProcess, Repo, daemon_config
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster

ENVIRONMENTS = 60
LEASE = 4.0  # seconds: short, so the test waits little for an expiry


def write_environments(repo: Repo, namespace: str, note: str) -> None:
    """60 overlays of one ConfigMap (``e<i>-settings``): a change of the base touches all of them."""
    repo.write("base/kustomization.yaml", "resources: [settings.yaml]\n")
    repo.write(
        "base/settings.yaml",
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": {"note": note},
            }
        ],
    )
    for index in range(ENVIRONMENTS):
        repo.write(f"envs/e{index}/kustomization.yaml", f"resources: [../../base]\nnamePrefix: e{index}-\n")


def notes(admin: Admin, namespace: str) -> dict[str, str]:
    """The note of every ``e<i>-settings`` ConfigMap, by environment index (one LIST)."""
    status, body = admin.call("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert status == 200
    found = {}
    for item in body.get("items", []):
        name = item["metadata"]["name"]
        if name.endswith("-settings"):
            found[name.removesuffix("-settings")] = (item.get("data") or {}).get("note", "")
    return found


def all_noted(admin: Admin, namespace: str, note: str) -> bool:
    current = notes(admin, namespace)
    return len(current) == ENVIRONMENTS and all(value == note for value in current.values())


def owners(replica: DaemonProcess) -> dict[str, str]:
    """Environment -> owning replica, as ``replica``'s status API tells it."""
    return {
        env["name"]: env.get("owner", "") for env in replica.get_json("/api/v1/environments")["environments"]
    }


def audit_writes(cluster: Cluster, since: int, namespace: str) -> dict[str, list[tuple[float, str]]]:
    """Writes to each environment's ConfigMap since ``since``: (time received, replica), by object."""
    with cluster.audit_log_path.open("rb") as handle:
        handle.seek(since)
        data = handle.read()
    writes: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        agent = str(event.get("userAgent", ""))
        if (
            " replica/" in agent
            and ref.get("namespace") == namespace
            and ref.get("resource") == "configmaps"
            and event.get("verb") in ("create", "update", "patch", "delete")
            and "dryRun=" not in str(event.get("requestURI", ""))
        ):
            received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
            writes[ref["name"]].append((received, agent.rsplit("replica/", 1)[1]))
    return writes


def assert_no_interleaving(writes: dict[str, list[tuple[float, str]]]) -> None:
    """Per object, each replica's writes form one run (A..A B..B, never A..B..A): the time windows in
    which two replicas wrote it never overlap."""
    for name, events in writes.items():
        runs = [replica for replica, _ in itertools.groupby(replica for _, replica in sorted(events))]
        assert len(runs) == len(set(runs)), f"{name} written by interleaved replicas: {runs}"


def balanced(owned: dict[str, str], replicas: list[str]) -> tuple[int, int]:
    counts = collections.Counter(owned.values())
    per = [counts.get(replica, 0) for replica in replicas]
    return max(per), min(per)


def test_three_replicas_share_sixty_environments_and_hand_them_over_without_overlap(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    admin: Admin,
    cluster: Cluster,
) -> None:
    write_environments(repo, namespace, "1")
    repo.commit_and_push("60 environments")
    prefix = f"x{namespace[-6:]}"
    environments = [{"name": f"{prefix}-e{index}", "path": f"envs/e{index}"} for index in range(ENVIRONMENTS)]
    sharding = {
        "enabled": True,
        "group": prefix,
        "lease_duration": LEASE,
        "renew_interval": 0.5,
        "safety_margin": 1,
    }
    replicas = [
        daemon_config(
            tmp_path,
            repo_url=repo.url,
            kubeconfig=kubeconfig,
            name=f"replica-{index}",
            environments=environments,
            leader_election={"identity": f"{prefix}-r{index}"},
            sharding=sharding,
        )
        for index in range(3)
    ]
    identities = [f"{prefix}-r{index}" for index in range(3)]
    mark = cluster.audit_log_path.stat().st_size
    try:
        for replica in replicas:
            replica.start(toolchain)
        repo.install_hook(replicas[1].port, tmp_path / "webhook-secret")  # webhooks reach one replica

        # every environment owned by exactly one replica, every replica agreeing, the load balanced
        def agreed() -> dict[str, str] | None:
            views = [owners(replica) for replica in replicas]
            first = views[0]
            done = all(first.get(env["name"]) in identities for env in environments)
            return first if done and all(view == first for view in views) else None

        owned = wait_for(agreed, timeout=60, what="all replicas to agree on every environment's owner")
        high, low = balanced(owned, identities)
        print(f"ownership over 3 replicas: max {high}, min {low}")
        assert low > 0
        assert high / low <= 1.5
        wait_for(lambda: all_noted(admin, namespace, "1"), timeout=90, what="the first syncs of all 60")
        # the replicas joined one after the other: environments moved, never written by two at once
        assert_no_interleaving(audit_writes(cluster, mark, namespace))
        mark = cluster.audit_log_path.stat().st_size

        # a push touching all 60, its webhook sent to one replica: applied everywhere
        write_environments(repo, namespace, "2")
        started = time.monotonic()
        repo.commit_and_push("touch all 60")
        wait_for(lambda: all_noted(admin, namespace, "2"), timeout=60, what="the push applied to all 60")
        print(f"push touching 60 environments applied in {time.monotonic() - started:.2f} s")
        writes = audit_writes(cluster, mark, namespace)
        assert len(writes) == ENVIRONMENTS
        for name, events in writes.items():  # steady membership: each written by its owner alone
            assert {replica for _, replica in events} == {owned[f"{prefix}-{name.removesuffix('-settings')}"]}

        # SIGKILL a replica: its environments are owned again and a push lands within lease + 5 s
        mark = cluster.audit_log_path.stat().st_size
        victim = replicas[2]
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed = time.monotonic()
        write_environments(repo, namespace, "3")
        repo.commit_and_push("after SIGKILL")
        wait_for(lambda: all_noted(admin, namespace, "3"), timeout=LEASE + 5, what="the push after SIGKILL")
        print(
            f"SIGKILL -> push applied everywhere in {time.monotonic() - killed:.2f} s (lease {LEASE:.0f} s)"
        )
        # the owners' status writes follow their objects' writes: wait for them, with a deadline
        survivors = wait_for(
            lambda: (view := owners(replicas[0])) and identities[2] not in view.values() and view,
            timeout=10,
            what="the killed replica's environments shown with their new owners",
        )
        assert_no_interleaving(audit_writes(cluster, mark, namespace))

        # bring it back: about a third moves back, again without overlap
        mark = cluster.audit_log_path.stat().st_size
        victim.start(toolchain)
        back = wait_for(
            lambda: (view := agreed()) is not None and identities[2] in view.values() and view,
            timeout=30,
            what="the restarted replica to own environments again",
        )
        moved = sum(1 for name, replica in back.items() if survivors[name] != replica)
        print(f"rejoin moved {moved} of {ENVIRONMENTS} environments")
        assert ENVIRONMENTS / 6 <= moved <= ENVIRONMENTS / 2
        write_environments(repo, namespace, "4")
        repo.commit_and_push("after rejoin")
        wait_for(lambda: all_noted(admin, namespace, "4"), timeout=60, what="the push after the rejoin")
        assert_no_interleaving(audit_writes(cluster, mark, namespace))

        # SIGTERM: the others own its environments in under 3 s
        mark = cluster.audit_log_path.stat().st_size
        leaving = replicas[0]
        assert leaving.process is not None
        leaving.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_for(
            lambda: identities[0] not in owners(replicas[1]).values(),
            timeout=3,
            interval=0.05,
            what="the SIGTERMed replica's environments owned by the others",
        )
        print(f"SIGTERM handover in {time.monotonic() - stopped:.2f} s")
        assert leaving.process.wait(15) == 0
        write_environments(repo, namespace, "5")
        repo.commit_and_push("after SIGTERM")
        wait_for(lambda: all_noted(admin, namespace, "5"), timeout=60, what="the push after SIGTERM")
        assert_no_interleaving(audit_writes(cluster, mark, namespace))
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.stop()
