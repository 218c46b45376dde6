"""Verified commits end to end: with ``repository.verify.allowed_signers`` the daemon applies only
commits SSH-signed by an allowed signer; an unsigned head on top keeps the last verified revision
(Stalled, UnverifiedCommit, an Event, a metric, zero writes), and a signed commit after it is applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.kube import KubeClient
from tests.e2e.conftest import Admin, Repo, daemon_config, git
from tests.helpers import wait_for
from tests.support import ApproverKey, AuditLog, config_map

pytestmark = pytest.mark.cluster


def signed_commit(repo: Repo, key: Path, message: str) -> str:
    git("add", "-A", cwd=repo.work)
    git(
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={key}",
        "commit",
        "-q",
        "-S",
        "-m",
        message,
        cwd=repo.work,
    )
    git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
    return git("rev-parse", "HEAD", cwd=repo.work)


async def test_only_commits_signed_by_an_allowed_signer_are_applied(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube: KubeClient,
    audit: AuditLog,
    admin: Admin,
) -> None:
    """Signed → applied; unsigned on top → not applied (zero writes), the environment says why and the
    metric counts it; signed again → applied."""
    pair = ApproverKey.create(tmp_path, "dev1@example.com")  # an ed25519 key pair on disk
    key = pair.private_key
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'dev1@example.com namespaces="git" {pair.public_line}\n')
    name = f"{namespace[:40]}-v"
    repo.write("app/kustomization.yaml", "resources: [objects.yaml]\n")
    repo.write("app/objects.yaml", [config_map("settings", namespace, note="1")])
    first = signed_commit(repo, key, "signed: note 1")
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[{"name": name, "path": "app", "health_timeout": 60}],
    )
    config = daemon.config_path.read_text()
    daemon.config_path.write_text(
        config.replace("repository:\n", f"repository:\n  verify:\n    allowed_signers: {signers}\n", 1)
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    daemon.start(toolchain)
    try:
        wait_for(
            lambda: (
                (s := daemon.environment(name)).get("condition") == "Ready" and s.get("revision") == first
            ),
            timeout=60,
            what="the signed commit to be applied",
        )
        repo.write("app/objects.yaml", [config_map("settings", namespace, note="2")])
        since = audit.mark()
        git("add", "-A", cwd=repo.work)
        git("commit", "-q", "-m", "unsigned: note 2", cwd=repo.work)
        git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
        status = wait_for(
            lambda: (s := daemon.environment(name)).get("reason") == "UnverifiedCommit" and s,
            timeout=60,
            what="the unsigned head to be refused",
        )
        assert status["condition"] == "Stalled"
        assert "not signed" in status["message"]
        assert daemon.metric("reconciler_unverified_commits_total") >= 1
        assert await audit.writes(kube, since, resources={"configmaps"}) == {}
        live = await kube.get("v1", "ConfigMap", namespace, "settings")
        assert live is not None
        assert live["data"]["note"] == "1"

        repo.write("app/objects.yaml", [config_map("settings", namespace, note="3")])
        third = signed_commit(repo, key, "signed: note 3")
        wait_for(
            lambda: (
                (s := daemon.environment(name)).get("condition") == "Ready" and s.get("revision") == third
            ),
            timeout=60,
            what="the next signed commit to be applied",
        )
        live = await kube.get("v1", "ConfigMap", namespace, "settings")
        assert live is not None
        assert live["data"]["note"] == "3"
    finally:
        assert daemon.stop() == 0
