"""The daemon's promotion commits, signed with its own SSH key: real Git (``git verify-commit`` with an
allowed_signers file) and reconciler's own verification both accept them, and they land on the remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reconciler.promotion.gitwriter import GitWriter
from reconciler.settings import RepositoryConfig
from reconciler.source import GitSource
from reconciler.source.verify import VerifyConfig, parse_allowed_signers, verify_commit


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_a_promotion_commit_is_signed_by_the_daemons_key(tmp_path: Path) -> None:
    """GitWriter with a signing key pushes a commit that ``git verify-commit`` and ``verify_commit``
    accept for the daemon's principal, with the edit and the trailer intact."""
    bare = tmp_path / "env.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("clone", "-q", str(bare), str(seed), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=seed)
    (seed / "prod").mkdir()
    (seed / "prod" / "kustomization.yaml").write_text("images:\n  - name: api\n    newTag: '1'\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "initial", cwd=seed)
    git("push", "-q", "origin", "main", cwd=seed)

    key = tmp_path / "daemon_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "daemon", "-f", str(key)], check=True
    )
    public = (tmp_path / "daemon_ed25519.pub").read_text().strip()
    source = GitSource(RepositoryConfig(url=f"file://{bare}"), tmp_path / "cache")
    writer = GitWriter(source, "reconciler", "reconciler@example.com", signing_key=key)

    def edit(work: Path) -> list[str]:
        target = work / "prod" / "kustomization.yaml"
        target.write_text(target.read_text().replace("'1'", "'2'"))
        return ["prod/kustomization.yaml"]

    sha, created = writer.commit("p-1", edit, "Promote api to 2\n\nPromotion: p-1\n")
    assert created
    assert len(sha) == 40

    check = tmp_path / "check"
    git("clone", "-q", str(bare), str(check), cwd=tmp_path)
    assert git("rev-parse", "HEAD", cwd=check) == sha
    assert "newTag: '2'" in (check / "prod" / "kustomization.yaml").read_text()
    assert "Promotion: p-1" in git("log", "-1", "--format=%B", cwd=check)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'reconciler@example.com namespaces="git" {public}\n')
    verified = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha],
        cwd=check,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert verified.returncode == 0, verified.stderr
    assert 'Good "git" signature for reconciler@example.com' in verified.stderr
    verdict = verify_commit(check, sha, VerifyConfig(tuple(parse_allowed_signers(signers.read_text()))))
    assert verdict.ok, verdict.reason
    assert verdict.signer == "reconciler@example.com"
