"""Promotions end to end where they meet people's files and each other: the commit into a kustomization
written by `kustomize edit set image` (newName, a digest pin, comments, hand quoting) changes exactly the
tag lines; two requests sent at the same moment to two replicas leave exactly one promotion to approve.

The daemon, its signing and its policy come from ``tests.e2e.test_promotions`` (``start``, ``Setup``), so
these tests sign however that module does."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import free_port
from reconciler.promotion.signing import make_body
from tests.e2e.conftest import DaemonProcess, Repo, git
from tests.e2e.test_promotions import Setup, push_staging_tag, start
from tests.helpers import wait_for
from tests.support import deployment

pytestmark = pytest.mark.cluster

PIN = "sha256:" + "5" * 64

# the production overlay as `kustomize edit set image` writes it (unindented), commented and quoted by hand
PRODUCTION = f"""\
resources:
- ../base
namePrefix: production-
images:
# the API: production pulls it through its own mirror, never from staging's
- name: registry.invalid/api
  newName: mirror.invalid/api  # production's registry
  newTag: "1"
# pinned: moves only with a digest
- name: registry.invalid/sidecar
  digest: {PIN}
- name: registry.invalid/worker
  newTag: '1'   # quoted by hand
"""


def staging(api: str, worker: str) -> str:
    return f"""\
resources: [../base]
namePrefix: staging-
images:
  - name: registry.invalid/api
    newName: staging-mirror.invalid/api
    newTag: "{api}"
  - name: registry.invalid/sidecar
    digest: {PIN}
  - name: registry.invalid/worker
    newTag: "{worker}"
"""


def app(namespace: str) -> dict[str, Any]:
    """The api Deployment with its worker and sidecar containers."""
    manifest = deployment("api", namespace, image="registry.invalid/api:0")
    manifest["spec"]["template"]["spec"]["containers"] += [
        {"name": "worker", "image": "registry.invalid/worker:0"},
        {"name": "sidecar", "image": "registry.invalid/sidecar:0"},
    ]
    return manifest


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


def test_a_promotion_into_a_kustomize_edit_overlay_changes_exactly_the_tag_lines(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_sync: Any,
    daemons: list[DaemonProcess],
) -> None:
    """Production's overlay in `kustomize edit set image` style, with newName (its own mirror), a digest
    pin and comments inside the block; staging (from another registry) moves two tags. The promotion
    commit's diff is exactly the two tag lines, each in its own quoting, and production then runs the
    new tags from its own mirror, with the sidecar still pinned."""
    setup = start(tmp_path, repo, kubeconfig, toolchain, namespace)
    daemons.append(setup.daemon)
    setup.pull()
    repo.write("apps/base/app.yaml", [app(namespace)])
    repo.write("apps/staging/kustomization.yaml", staging("1", "1"))
    repo.write("apps/production/kustomization.yaml", PRODUCTION)
    revision = repo.commit_and_push("overlays in the teams' own styles")
    setup.wait_ready(setup.staging, revision)
    setup.wait_ready(setup.production, revision)
    repo.write("apps/staging/kustomization.yaml", staging("2", "2"))
    revision = repo.commit_and_push("staging: api and worker 2")
    setup.wait_ready(setup.staging, revision)

    status, promotion = setup.request()
    assert status == 201, promotion
    for approver in ("alice@example.com", "bob@example.com"):
        status, body = setup.decide(promotion, approver)
        assert status == 200, body
    done = setup.wait_phase(promotion["id"], "Succeeded", "Failed", timeout=90)
    assert done["phase"] == "Succeeded", done

    assert setup.commits_with(f"Promotion: {promotion['id']}") == [done["commit"]]  # fetches it too
    changed = git("show", "--format=", "--name-only", done["commit"], cwd=repo.work).split()
    assert changed == ["apps/production/kustomization.yaml"]
    diff = git("show", "--format=", "-U0", done["commit"], cwd=repo.work)
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert removed == ['-  newTag: "1"', "-  newTag: '1'   # quoted by hand"], diff
    assert added == ['+  newTag: "2"', "+  newTag: '2'   # quoted by hand"], diff
    after = git("show", f"{done['commit']}:apps/production/kustomization.yaml", cwd=repo.work) + "\n"
    assert after == PRODUCTION.replace('newTag: "1"', 'newTag: "2"').replace("'1'", "'2'")

    def production_images() -> list[str] | None:
        live = kube_sync("apps/v1", "Deployment", namespace, "production-api")
        images = [c["image"] for c in live["spec"]["template"]["spec"]["containers"]] if live else []
        return images if "mirror.invalid/api:2" in images else None

    assert wait_for(production_images, timeout=30, what="production to run the promoted tags") == [
        "mirror.invalid/api:2",
        "registry.invalid/worker:2",
        f"registry.invalid/sidecar@{PIN}",
    ]


def promotions_path(namespace: str) -> str:
    return f"/apis/reconciler.dev/v1alpha1/namespaces/{namespace}/promotions"


def order(metadata: dict[str, Any]) -> tuple[str, str, str]:
    """Newest last, as documented: creationTimestamp, then the requested-at annotation, then the name."""
    requested = (metadata.get("annotations") or {}).get("reconciler.dev/requested-at", "")
    return metadata["creationTimestamp"], requested, metadata["name"]


def second_replica(setup: Setup, tmp_path: Path, toolchain: Toolchain) -> Setup:
    """Restart the daemon as replica 0 of two with leader election, and start replica 1 with the same
    configuration (policy and keys as ``start`` made them); replica 0 leads."""
    lease = {
        "enabled": True,
        "lease_name": f"promotions-{setup.namespace[-20:]}",
        "lease_duration": 4,
        "renew_interval": 0.5,
    }
    config = yaml.safe_load(setup.daemon.config_path.read_text())
    setup.daemon.stop()
    config["leader_election"] = {**lease, "identity": "replica-0"}
    setup.daemon.config_path.write_text(yaml.safe_dump(config))
    setup.daemon.start(toolchain)
    wait_for(lambda: setup.daemon.metric("reconciler_leader") == 1, timeout=30, what="replica 0 to lead")
    port = free_port()
    other = {
        **config,
        "listen": f"127.0.0.1:{port}",
        "cache_dir": str(tmp_path / "replica-1-cache"),
        "leader_election": {**lease, "identity": "replica-1"},
    }
    path = tmp_path / "replica-1.yaml"
    path.write_text(yaml.safe_dump(other))
    follower = DaemonProcess(path, port, tmp_path / "replica-1.log")
    follower.start(toolchain)
    assert follower.metric("reconciler_leader") == 0
    return dataclasses.replace(setup, daemon=follower)


def test_two_requests_sent_at_the_same_moment_to_two_replicas_leave_exactly_one_to_approve(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_list: Any,
    daemons: list[DaemonProcess],
) -> None:
    """Two signed requests for one pipeline, released at the same moment, one to the leader and one to
    the follower: both are accepted, exactly one (the newest, in the documented order) stays Pending
    and takes approvals, the other is Superseded by it. (Each used to supersede the other.)"""
    leader = start(tmp_path, repo, kubeconfig, toolchain, namespace)
    daemons.append(leader.daemon)
    revision = push_staging_tag(leader, "2")
    follower = second_replica(leader, tmp_path, toolchain)
    daemons.append(follower.daemon)

    identities = ["carol@example.com", "alice@example.com"]
    bodies = [
        make_body("request", identity, **{"from": leader.staging, "to": leader.production})
        for identity in identities
    ]
    go = threading.Barrier(2)
    answers: list[Any] = [None, None]

    def send(index: int, replica: Setup) -> None:
        go.wait(timeout=30)
        try:
            answers[index] = replica.call("POST", "/api/v1/promotions", bodies[index], identities[index])
        except AssertionError as exc:  # a 5xx (the status write of a request lost to the race, once)
            answers[index] = (500, str(exc)[:2000])

    threads = [threading.Thread(target=send, args=(i, r)) for i, r in enumerate((leader, follower))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [answer and answer[0] for answer in answers] == [201, 201], answers
    names = {answer[1]["id"] for answer in answers}
    assert len(names) == 2

    def settled() -> list[dict[str, Any]] | None:
        items = leader.read("/api/v1/promotions")["promotions"]
        ours = [p for p in items if p["id"] in names]
        return ours if len(ours) == 2 and all(p["phase"] for p in ours) else None

    ours = wait_for(settled, timeout=30, what="both promotions to be listed")
    listed = kube_list(promotions_path(leader.namespace))  # the daemon's own namespace
    stored = {p["metadata"]["name"]: p["metadata"] for p in listed}
    newest = max(ours, key=lambda p: order(stored[p["id"]]))
    assert sorted(p["phase"] for p in ours) == ["Pending", "Superseded"], ours
    assert newest["phase"] == "Pending", ours
    older = next(p for p in ours if p["id"] != newest["id"])
    assert older["message"] == f"superseded by {newest['id']}"
    # both replicas see the same survivor, and it takes approvals
    assert follower.promotion(newest["id"])["phase"] == "Pending"
    assert newest["revision"] == revision
    status, body = follower.decide(newest, "bob@example.com")
    assert status == 200, body
    assert leader.promotion(newest["id"])["approvalSummary"] == "1/2"
    status, body = leader.decide(older, "bob@example.com")
    assert status == 409, body
