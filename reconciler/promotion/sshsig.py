"""SSH signatures (OpenSSH's ``SSHSIG`` format, what ``ssh-keygen -Y sign`` and Git's SSH commit signing
make): verify them against public keys, and make them with a private key file or the running ssh-agent.

An approver proves who they are by signing with their own SSH key; the daemon holds only public keys,
so nobody who reads the daemon's configuration or Secrets can sign as an approver. A signature made
with nothing but OpenSSH verifies::

    ssh-keygen -Y sign -n reconciler-promotion -f ~/.ssh/id_ed25519 body.json   # writes body.json.sig

Supported keys: ed25519, ECDSA (nistp256/384/521) and RSA (rsa-sha2-256/512). The format (see
OpenSSH's PROTOCOL.sshsig): a blob ``"SSHSIG" uint32(1) string(publickey) string(namespace)
string(reserved) string(hash_algorithm) string(signature)`` whose signature covers ``"SSHSIG"
string(namespace) string(reserved) string(hash_algorithm) string(H(message))``. The namespace binds a
signature to its purpose: a commit signature (namespace ``git``) is not an approval.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import shlex
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

MAGIC = b"SSHSIG"
VERSION = 1
NAMESPACE = "reconciler-promotion"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SSHSigError(ValueError):
    """A signature or key that cannot be parsed or does not verify; the message says which."""


# -- wire format ---------------------------------------------------------------------------------
def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _string(raw)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise SSHSigError("truncated SSH signature")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> bool:
        return self.offset == len(self.data)


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG blob."""

    public_key: bytes  # the signer's public key blob (SSH wire format)
    namespace: str
    hash_algorithm: str
    signature: bytes  # string(format) string(blob)

    @property
    def key_type(self) -> str:
        """``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``, ..."""
        return _Reader(self.public_key).string().decode(errors="replace")


def parse(text: str | bytes) -> Signature:
    """An SSHSIG from its armored text (``-----BEGIN SSH SIGNATURE-----``) or the bare base64 between
    the armor lines (which fits in an HTTP header)."""
    raw = text.decode("ascii", errors="replace") if isinstance(text, bytes) else text
    lines = [line.strip() for line in raw.strip().splitlines()]
    if lines and lines[0] == ARMOR_BEGIN:
        if lines[-1] != ARMOR_END:
            raise SSHSigError("SSH signature armor is not closed")
        lines = lines[1:-1]
    try:
        blob = base64.b64decode("".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise SSHSigError("SSH signature is not valid base64") from None
    reader = _Reader(blob)
    if reader.take(6) != MAGIC:
        raise SSHSigError("not an SSH signature (no SSHSIG preamble)")
    if reader.uint32() != VERSION:
        raise SSHSigError("unsupported SSH signature version")
    public_key = reader.string()
    namespace = reader.string().decode("utf-8", errors="replace")
    reader.string()  # reserved
    hash_algorithm = reader.string().decode("ascii", errors="replace")
    signature = reader.string()
    if not reader.done():
        raise SSHSigError("trailing bytes after the SSH signature")
    return Signature(public_key, namespace, hash_algorithm, signature)


def _signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = _HASHES[hash_algorithm](message).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


# -- keys ----------------------------------------------------------------------------------------
def load_public_key(line: str) -> tuple[PublicKey, bytes]:
    """A public key from an ``authorized_keys``-style line (``ssh-ed25519 AAAA... comment``), with its
    wire blob."""
    parts = line.split()
    if len(parts) < 2:
        raise SSHSigError("expected 'KEYTYPE BASE64 [comment]'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise SSHSigError(f"not a usable SSH public key ({type(exc).__name__})") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise SSHSigError(f"unsupported key type {parts[0]}")
    return key, blob


def fingerprint(blob: bytes) -> str:
    """``SHA256:...`` as ssh-keygen prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _verify_raw(key: PublicKey, key_type: str, signature: bytes, data: bytes) -> None:
    reader = _Reader(signature)
    fmt = reader.string().decode("ascii", errors="replace")
    blob = reader.string()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if fmt != "ssh-ed25519":
                raise SSHSigError(f"signature format {fmt} does not match an ed25519 key")
            key.verify(blob, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            curve = key_type.rsplit("-", 1)[-1]
            if fmt != key_type or curve not in _CURVES:
                raise SSHSigError(f"signature format {fmt} does not match the {key_type} key")
            inner = _Reader(blob)
            der = encode_dss_signature(inner.mpint(), inner.mpint())
            key.verify(der, data, ec.ECDSA(_CURVES[curve][1]))
        else:
            algorithm: hashes.HashAlgorithm
            if fmt == "rsa-sha2-512":
                algorithm = hashes.SHA512()
            elif fmt == "rsa-sha2-256":
                algorithm = hashes.SHA256()
            else:
                raise SSHSigError(f"RSA signature format {fmt} is refused (use rsa-sha2-256 or -512)")
            key.verify(blob, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SSHSigError("the signature does not verify") from None


def verify(signature: Signature, message: bytes, allowed: list[str], namespace: str = NAMESPACE) -> str:
    """The fingerprint of the key in ``allowed`` (public key lines) that made ``signature`` over
    ``message`` in ``namespace``; ``SSHSigError`` when none did."""
    if signature.namespace != namespace:
        raise SSHSigError(f"signature namespace {signature.namespace!r} is not {namespace!r}")
    if signature.hash_algorithm not in _HASHES:
        raise SSHSigError(f"hash algorithm {signature.hash_algorithm!r} is not sha256 or sha512")
    for line in allowed:
        key, blob = load_public_key(line)
        if blob != signature.public_key:
            continue
        data = _signed_data(namespace, signature.hash_algorithm, message)
        _verify_raw(key, signature.key_type, signature.signature, data)
        return fingerprint(blob)
    raise SSHSigError(f"key {fingerprint(signature.public_key)} is not one of the signer's allowed keys")


# -- allowed_signers (OpenSSH's file of who may sign what) ----------------------------------------
@dataclass(frozen=True)
class AllowedSigner:
    """One line of an OpenSSH ``allowed_signers`` file."""

    principals: tuple[str, ...]
    key: str  # "keytype base64"
    namespaces: tuple[str, ...] = ()  # empty: any
    valid_after: dt.datetime | None = None
    valid_before: dt.datetime | None = None

    def allows(self, principal: str, namespace: str, when: dt.datetime) -> bool:
        """True when this line lets ``principal`` sign in ``namespace`` at ``when``."""
        if principal not in self.principals and "*" not in self.principals:
            return False
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.valid_after and when < self.valid_after:
            return False
        return not (self.valid_before and when > self.valid_before)


def _timestamp(value: str, where: str) -> dt.datetime:
    digits = value.rstrip("Z")
    for layout in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return dt.datetime.strptime(digits, layout).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise ValueError(f"{where}: unreadable time {value!r} (YYYYMMDD[HHMM[SS]][Z])")


def parse_allowed_signers(text: str, source: str = "allowed_signers") -> list[AllowedSigner]:
    """The lines of an ``allowed_signers`` file; ``ValueError`` naming the line for anything it cannot
    honour (``cert-authority`` is refused rather than ignored)."""
    signers: list[AllowedSigner] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            fields = shlex.split(line)
        except ValueError:
            raise ValueError(f"{where}: unbalanced quotes") from None
        if len(fields) < 3:
            raise ValueError(f"{where}: expected 'principals [options] keytype base64'")
        principals = tuple(p for p in fields[0].split(",") if p)
        rest = fields[1:]
        namespaces: tuple[str, ...] = ()
        after = before = None
        if not re.match(r"^(ssh-|ecdsa-|sk-)", rest[0]):
            for option in rest[0].split(","):
                name, _, value = option.partition("=")
                name = name.lower()
                if name == "namespaces":
                    namespaces = tuple(v for v in value.split(",") if v)
                elif name == "valid-after":
                    after = _timestamp(value, where)
                elif name == "valid-before":
                    before = _timestamp(value, where)
                else:
                    raise ValueError(f"{where}: option {name!r} is not supported")
            rest = rest[1:]
        if len(rest) < 2:
            raise ValueError(f"{where}: expected a key after the principals and options")
        key = f"{rest[0]} {rest[1]}"
        try:
            load_public_key(key)
        except SSHSigError as exc:
            raise ValueError(f"{where}: {exc}") from None
        signers.append(AllowedSigner(principals, key, namespaces, after, before))
    return signers


# -- signing -------------------------------------------------------------------------------------
def _public_blob(key: PrivateKey) -> bytes:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def _sign_raw(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _string(b"ssh-ed25519") + _string(key.sign(data))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = {"secp256r1": "nistp256", "secp384r1": "nistp384", "secp521r1": "nistp521"}[key.curve.name]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_CURVES[curve][1])))
        return _string(f"ecdsa-sha2-{curve}".encode()) + _string(_mpint(r) + _mpint(s))
    return _string(b"rsa-sha2-512") + _string(key.sign(data, padding.PKCS1v15(), hashes.SHA512()))


def armor(public_blob: bytes, signature: bytes, namespace: str, hash_algorithm: str = "sha512") -> str:
    """The armored SSHSIG text, as ``ssh-keygen -Y sign`` writes it."""
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(signature)
    )
    encoded = base64.b64encode(blob).decode()
    body = "\n".join(encoded[i : i + 70] for i in range(0, len(encoded), 70))
    return f"{ARMOR_BEGIN}\n{body}\n{ARMOR_END}\n"


def sign_with_key(
    path: Path, message: bytes, namespace: str = NAMESPACE, passphrase: bytes | None = None
) -> str:
    """Sign ``message`` with an OpenSSH private key file; the armored signature."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SSHSigError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise SSHSigError(f"{path}: unsupported key type")
    data = _signed_data(namespace, "sha512", message)
    return armor(_public_blob(key), _sign_raw(key, data), namespace)


# ssh-agent protocol (draft-miller-ssh-agent): sign request 13 -> sign response 14, failure 5
_AGENT_SIGN_REQUEST, _AGENT_SIGN_RESPONSE = 13, 14
_AGENT_RSA_SHA2_512 = 4


def sign_with_agent(
    public_key_line: str, message: bytes, namespace: str = NAMESPACE, socket_path: str | None = None
) -> str:
    """Sign ``message`` with the key ``public_key_line`` held by the running ssh-agent
    (``$SSH_AUTH_SOCK``); the armored signature."""
    path = socket_path or os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise SSHSigError("no ssh-agent: SSH_AUTH_SOCK is not set (or pass --key FILE)")
    _, blob = load_public_key(public_key_line)
    data = _signed_data(namespace, "sha512", message)
    flags = _AGENT_RSA_SHA2_512 if public_key_line.startswith("ssh-rsa") else 0
    request = bytes([_AGENT_SIGN_REQUEST]) + _string(blob) + _string(data) + struct.pack(">I", flags)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        try:
            connection.connect(path)
            connection.sendall(_string(request))
            length = struct.unpack(">I", _receive(connection, 4))[0]
            answer = _receive(connection, length)
        except OSError as exc:
            raise SSHSigError(f"ssh-agent at {path}: {exc.strerror or exc}") from None
    if not answer or answer[0] != _AGENT_SIGN_RESPONSE:
        raise SSHSigError("ssh-agent refused to sign (is the key loaded? ssh-add -l)")
    signature = _Reader(answer[1:]).string()
    return armor(blob, signature, namespace)


def _receive(connection: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise OSError("the agent closed the connection")
        chunks += chunk
    return chunks


def header_value(armored: str) -> str:
    """The armored signature as one header value: ``sshsig=<base64>``."""
    return "sshsig=" + "".join(line.strip() for line in armored.strip().splitlines()[1:-1])
