"""SSH signatures against the real OpenSSH: what ``ssh-keygen -Y sign`` makes verifies here, what we make
verifies with ``ssh-keygen -Y verify``, through a key file and through a real ssh-agent."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.promotion import sshsig

KEY_TYPES = [("ed25519", []), ("ecdsa", ["-b", "256"]), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"])]
MESSAGE = b'{"action":"approve","identity":"alice@example.com","nonce":"0123456789abcdef"}'


def keygen(directory: Path, name: str, key_type: str, extra: list[str]) -> tuple[Path, str]:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, *extra, "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path, (directory / f"{name}.pub").read_text().strip()


def ssh_keygen_sign(key: Path, message: bytes, namespace: str = sshsig.NAMESPACE) -> str:
    data = key.parent / "message"
    data.write_bytes(message)
    signature = Path(f"{data}.sig")
    signature.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key), str(data)], check=True)
    return signature.read_text()


def ssh_keygen_verifies(directory: Path, public: str, armored: str, message: bytes) -> bool:
    (directory / "allowed_signers").write_text(f"alice@example.com {public}\n")
    (directory / "check.sig").write_text(armored)
    result = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(directory / "allowed_signers"),
            "-I",
            "alice@example.com",
            "-n",
            sshsig.NAMESPACE,
            "-s",
            str(directory / "check.sig"),
        ],
        input=message,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.parametrize(("key_type", "extra"), KEY_TYPES, ids=["ed25519", "ecdsa256", "ecdsa384", "rsa"])
def test_a_signature_made_by_ssh_keygen_verifies(tmp_path: Path, key_type: str, extra: list[str]) -> None:
    """``ssh-keygen -Y sign -n reconciler-promotion`` over the body is accepted with the public key."""
    key, public = keygen(tmp_path, "alice", key_type, extra)
    armored = ssh_keygen_sign(key, MESSAGE)
    parsed = sshsig.parse(armored)
    assert sshsig.verify(parsed, MESSAGE, [public]).startswith("SHA256:")
    # the bare base64 between the armor lines (what fits in a header) parses the same
    assert sshsig.parse(sshsig.header_value(armored).removeprefix("sshsig=")) == parsed


@pytest.mark.parametrize(("key_type", "extra"), KEY_TYPES, ids=["ed25519", "ecdsa256", "ecdsa384", "rsa"])
def test_our_signature_verifies_with_ssh_keygen(tmp_path: Path, key_type: str, extra: list[str]) -> None:
    """A signature made from a key file by ``sign_with_key`` passes ``ssh-keygen -Y verify``."""
    key, public = keygen(tmp_path, "alice", key_type, extra)
    armored = sshsig.sign_with_key(key, MESSAGE)
    assert ssh_keygen_verifies(tmp_path, public, armored, MESSAGE)
    assert not ssh_keygen_verifies(tmp_path, public, armored, MESSAGE + b" ")


def test_wrong_key_namespace_or_message_is_refused(tmp_path: Path) -> None:
    """Another key, a signature for another purpose (Git's namespace), or a changed body: refused."""
    key, public = keygen(tmp_path, "alice", "ed25519", [])
    _, other = keygen(tmp_path, "mallory", "ed25519", [])
    armored = ssh_keygen_sign(key, MESSAGE)
    with pytest.raises(sshsig.SSHSigError, match="not one of the signer's allowed keys"):
        sshsig.verify(sshsig.parse(armored), MESSAGE, [other])
    with pytest.raises(sshsig.SSHSigError, match="does not verify"):
        sshsig.verify(sshsig.parse(armored), MESSAGE.replace(b"alice", b"mallo"), [public])
    git_signature = ssh_keygen_sign(key, MESSAGE, namespace="git")
    with pytest.raises(sshsig.SSHSigError, match="namespace"):
        sshsig.verify(sshsig.parse(git_signature), MESSAGE, [public])


@pytest.mark.parametrize(
    "garbage",
    ["", "not base64 !!", "U1NIU0lH", "-----BEGIN SSH SIGNATURE-----\nAAAA", "AAAAAAAAAAAAAAAAAAAA"],
)
def test_malformed_signatures_are_a_clear_error(garbage: str) -> None:
    """Garbage never raises anything but SSHSigError."""
    with pytest.raises(sshsig.SSHSigError):
        sshsig.parse(garbage)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent on a socket of its own."""
    socket_path = str(tmp_path / "agent.sock")
    process = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path):
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(("key_type", "extra"), [KEY_TYPES[0], KEY_TYPES[1], KEY_TYPES[3]])
def test_the_running_ssh_agent_signs(tmp_path: Path, agent: str, key_type: str, extra: list[str]) -> None:
    """With the key loaded in an ssh-agent, ``sign_with_agent`` makes a signature ssh-keygen accepts;
    a key the agent does not hold is a clear error."""
    key, public = keygen(tmp_path, "alice", key_type, extra)
    subprocess.run(
        ["ssh-add", "-q", str(key)],
        env={**os.environ, "SSH_AUTH_SOCK": agent},
        check=True,
        capture_output=True,
    )
    armored = sshsig.sign_with_agent(public, MESSAGE, socket_path=agent)
    assert ssh_keygen_verifies(tmp_path, public, armored, MESSAGE)
    assert sshsig.verify(sshsig.parse(armored), MESSAGE, [public])
    _, missing = keygen(tmp_path, "bob", "ed25519", [])
    with pytest.raises(sshsig.SSHSigError, match="refused to sign"):
        sshsig.sign_with_agent(missing, MESSAGE, socket_path=agent)
