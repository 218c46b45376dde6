"""Verified commits against real Git, OpenSSH and GnuPG: commits signed by an allowed signer verify;
unsigned ones, other keys, keys not valid for Git or not valid now do not, each with a reason."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.source.verify import VerifyConfig, parse_allowed_signers, split_signature, verify_commit


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=path)
    run("git", "config", "user.name", "Alice", cwd=path)
    run("git", "config", "user.email", "alice@example.com", cwd=path)
    return path


def ssh_key(directory: Path, name: str) -> tuple[Path, str]:
    key = directory / name
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key), cwd=directory)
    return key, (directory / f"{name}.pub").read_text().strip()


def commit(repo: Path, note: str, *sign: str) -> str:
    (repo / "file").write_text(note)
    run("git", "add", "file", cwd=repo)
    run("git", *sign, "commit", "-q", "-m", note, *(["-S"] if sign else []), cwd=repo)
    return run("git", "rev-parse", "HEAD", cwd=repo)


def ssh_signed(repo: Path, note: str, key: Path) -> str:
    return commit(repo, note, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}")


def test_an_ssh_signed_commit_by_an_allowed_signer_verifies(repo: Path, tmp_path: Path) -> None:
    """Signed with an allowed key (namespace git): verified, naming the principal."""
    key, public = ssh_key(tmp_path, "alice")
    sha = ssh_signed(repo, "signed", key)
    config = VerifyConfig(tuple(parse_allowed_signers(f'alice@example.com namespaces="git" {public}')))
    verdict = verify_commit(repo, sha, config)
    assert verdict.ok, verdict.reason
    assert verdict.signer == "alice@example.com"


def test_unsigned_other_key_and_invalid_lines_are_refused_with_a_reason(repo: Path, tmp_path: Path) -> None:
    """Unsigned, signed by a key not listed, a key limited to another namespace, an expired key."""
    key, public = ssh_key(tmp_path, "alice")
    _, other = ssh_key(tmp_path, "mallory")
    unsigned = commit(repo, "unsigned")
    signed = ssh_signed(repo, "signed", key)
    allowed = VerifyConfig(tuple(parse_allowed_signers(f"alice@example.com {public}")))
    assert "is not signed" in verify_commit(repo, unsigned, allowed).reason
    assert (
        "not an allowed signer"
        in verify_commit(
            repo, signed, VerifyConfig(tuple(parse_allowed_signers(f"m@example.com {other}")))
        ).reason
    )
    for options in ('namespaces="file"', "valid-before=20200101"):
        config = VerifyConfig(tuple(parse_allowed_signers(f"alice@example.com {options} {public}")))
        verdict = verify_commit(repo, signed, config, now=dt.datetime.now(dt.UTC))
        assert not verdict.ok
        assert "not valid for Git signatures now" in verdict.reason


def test_the_signed_payload_is_the_commit_without_its_signature(repo: Path, tmp_path: Path) -> None:
    """A commit whose message was changed after signing (same signature, other payload) fails."""
    key, public = ssh_key(tmp_path, "alice")
    sha = ssh_signed(repo, "original", key)
    raw = subprocess.run(["git", "cat-file", "commit", sha], cwd=repo, capture_output=True, check=True).stdout
    signature, payload = split_signature(raw)
    assert signature.startswith(b"-----BEGIN SSH SIGNATURE-----")
    assert b"gpgsig" not in payload
    forged = raw.replace(b"original", b"tampered")
    forged_sha = (
        subprocess.run(
            ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
            cwd=repo,
            input=forged,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    config = VerifyConfig(tuple(parse_allowed_signers(f"alice@example.com {public}")))
    verdict = verify_commit(repo, forged_sha, config)
    assert not verdict.ok
    assert "does not verify" in verdict.reason


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice@example.com cert-authority ssh-ed25519 AAAA", "not supported"),
        ("alice@example.com", "expected"),
        ("alice@example.com ssh-ed25519 not-base64!", "usable"),
        ('alice@example.com namespaces="git ssh-ed25519 AAAA', "quotes"),
    ],
)
def test_allowed_signers_lines_it_cannot_honour_are_errors(line: str, message: str) -> None:
    """cert-authority and malformed lines are refused with the line number, never ignored."""
    with pytest.raises(ValueError, match=message) as caught:
        parse_allowed_signers(line, "signers")
    assert "signers:1" in str(caught.value)


def test_an_openpgp_signed_commit_verifies_against_the_allowed_keyring_only(
    repo: Path, tmp_path: Path
) -> None:
    """A commit signed with an allowed OpenPGP key verifies; one signed by another key does not."""
    signer_home = tmp_path / "signer-gnupg"
    signer_home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(signer_home)}
    for uid in ("Alice <alice@example.com>", "Mallory <mallory@example.com>"):
        run(
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
            cwd=tmp_path,
            env=env,
        )
    exported = tmp_path / "allowed.asc"
    exported.write_text(
        run("gpg", "--batch", "--armor", "--export", "alice@example.com", cwd=tmp_path, env=env)
    )

    def gpg_signed(note: str, uid: str) -> str:
        (repo / "file").write_text(note)
        run("git", "add", "file", cwd=repo)
        run("git", "-c", f"user.signingkey={uid}", "commit", "-q", "-S", "-m", note, cwd=repo, env=env)
        return run("git", "rev-parse", "HEAD", cwd=repo)

    config = VerifyConfig(gpg_public_keys=exported)
    try:
        good = verify_commit(
            repo, gpg_signed("by alice", "alice@example.com"), config, tmp_path / "daemon-gnupg"
        )
        assert good.ok, good.reason
        bad = verify_commit(
            repo, gpg_signed("by mallory", "mallory@example.com"), config, tmp_path / "daemon-gnupg"
        )
        assert not bad.ok
        assert "OpenPGP signature status" in bad.reason
        assert not verify_commit(repo, gpg_signed("again", "alice@example.com"), VerifyConfig()).ok
    finally:  # gpg leaves an agent per home behind
        for home in (signer_home, tmp_path / "daemon-gnupg"):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
