"""Verified commits: with ``repository.verify`` configured, the daemon syncs a revision only when its
commit is signed by an allowed signer (like Flux's ``verify``).

* **SSH-signed commits** (``gpg.format=ssh``, what most engineers now use) are checked here: the
  signature is taken from the commit object's ``gpgsig`` header, the signed payload is the object
  without it, and the SSHSIG (namespace ``git``) must verify with a key of the OpenSSH
  ``allowed_signers`` file (``principals [namespaces="git"] keytype base64 [comment]``).
* **OpenPGP-signed commits** are checked by ``git verify-commit`` with gpg, against a keyring that holds
  only the allowed public keys (``gpg_public_keys``, imported into a private GNUPGHOME), so any good
  signature is by an allowed key.

Anything else (unsigned, a key not listed, a bad signature, an expired ``valid-before``) is a
``Verdict`` that says why; the caller keeps the last verified revision.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reconciler.promotion import sshsig
from reconciler.promotion.sshsig import AllowedSigner, parse_allowed_signers

__all__ = [
    "AllowedSigner",
    "Verdict",
    "VerifyConfig",
    "parse_allowed_signers",
    "split_signature",
    "verify_commit",
]

GIT_NAMESPACE = "git"
_SIGNATURE_HEADERS = (b"gpgsig", b"gpgsig-sha256")


@dataclass(frozen=True)
class VerifyConfig:
    """``repository.verify``: who may sign the commits the daemon syncs."""

    allowed_signers: tuple[AllowedSigner, ...] = ()
    gpg_public_keys: Path | None = None

    @property
    def enabled(self) -> bool:
        """True when commits must be verified."""
        return bool(self.allowed_signers) or self.gpg_public_keys is not None


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one commit."""

    ok: bool
    signer: str = ""  # the principal (SSH) or key (OpenPGP) that signed it
    reason: str = ""  # why it is not verified


def split_signature(commit: bytes) -> tuple[bytes, bytes]:
    """(signature, signed payload) of a raw commit object; (b"", commit) when it is unsigned."""
    headers, separator, message = commit.partition(b"\n\n")
    lines = headers.split(b"\n")
    kept: list[bytes] = []
    signature: list[bytes] = []
    inside = False
    for line in lines:
        if inside and line.startswith(b" "):
            signature.append(line[1:])
            continue
        inside = False
        name = line.split(b" ", 1)[0]
        if name in _SIGNATURE_HEADERS and not signature:
            inside = True
            signature.append(line[len(name) + 1 :])
            continue
        kept.append(line)
    if not signature:
        return b"", commit
    return b"\n".join(signature), b"\n".join(kept) + separator + message


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=60, env=env
    )


def verify_commit(
    repo: Path, sha: str, config: VerifyConfig, gnupg_home: Path | None = None, now: dt.datetime | None = None
) -> Verdict:
    """Whether commit ``sha`` of ``repo`` is signed by an allowed signer (blocking: run in a thread)."""
    short = sha[:12]
    raw = _git(repo, "cat-file", "commit", sha)
    if raw.returncode != 0:
        return Verdict(False, reason=f"commit {short} cannot be read: {raw.stderr.decode(errors='replace')}")
    signature, payload = split_signature(raw.stdout)
    if not signature:
        return Verdict(False, reason=f"commit {short} is not signed")
    if signature.startswith(sshsig.ARMOR_BEGIN.encode()):
        return _verify_ssh(short, signature, payload, config, now or dt.datetime.now(dt.UTC))
    if signature.startswith(b"-----BEGIN PGP SIGNATURE-----"):
        return _verify_gpg(repo, sha, config, gnupg_home)
    return Verdict(False, reason=f"commit {short} carries a signature of an unknown kind")


def _verify_ssh(
    short: str, signature: bytes, payload: bytes, config: VerifyConfig, now: dt.datetime
) -> Verdict:
    try:
        parsed = sshsig.parse(signature)
    except sshsig.SSHSigError as exc:
        return Verdict(False, reason=f"commit {short}: {exc}")
    fingerprint = sshsig.fingerprint(parsed.public_key)
    candidates = [s for s in config.allowed_signers if sshsig.load_public_key(s.key)[1] == parsed.public_key]
    if not candidates:
        return Verdict(
            False, reason=f"commit {short} is signed by {fingerprint}, which is not an allowed signer"
        )
    for signer in candidates:
        if not any(signer.allows(p, GIT_NAMESPACE, now) for p in signer.principals):
            continue
        try:
            sshsig.verify(parsed, payload, [signer.key], namespace=GIT_NAMESPACE)
        except sshsig.SSHSigError as exc:
            return Verdict(False, reason=f"commit {short}: {exc}")
        return Verdict(True, signer=",".join(signer.principals))
    return Verdict(False, reason=f"commit {short}: key {fingerprint} is not valid for Git signatures now")


_IMPORTED: set[tuple[Path, Path]] = set()


def _gpg_keyring(home: Path, source: Path) -> None:
    """A private GNUPGHOME (0700, as gpg insists) holding only the allowed OpenPGP public keys,
    imported once per process."""
    if (home, source) in _IMPORTED:
        return
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    result = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--import", str(source)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise ValueError(f"{source}: gpg could not import the allowed keys")
    _IMPORTED.add((home, source))


def _verify_gpg(repo: Path, sha: str, config: VerifyConfig, gnupg_home: Path | None) -> Verdict:
    short = sha[:12]
    if config.gpg_public_keys is None or gnupg_home is None:
        return Verdict(False, reason=f"commit {short} is OpenPGP-signed, and no OpenPGP keys are allowed")
    try:
        _gpg_keyring(gnupg_home, config.gpg_public_keys)
    except (ValueError, OSError) as exc:
        return Verdict(False, reason=str(exc))
    env = {**os.environ, "GNUPGHOME": str(gnupg_home)}
    result = _git(repo, "log", "-1", "--format=%G?%x00%GK", sha, env=env)
    status, _, key = result.stdout.decode(errors="replace").strip().partition("\0")
    # the keyring holds only allowed keys, so a good signature (G, or U: good with unknown trust) is
    # by an allowed signer; expired or revoked keys (X, Y, R), bad (B) and uncheckable (E) are not
    if status in ("G", "U"):
        return Verdict(True, signer=key)
    return Verdict(False, reason=f"commit {short}: OpenPGP signature status {status or '?'} (not a good one)")
