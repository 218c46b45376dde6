"""Signed promotion requests, approvals and rejections.

A mutating call carries a JSON body and two headers:

* ``X-Reconciler-Key-Id``: the approver identity whose key signed it, or an integration's name;
* ``X-Reconciler-Signature``: for an approver, ``sshsig=<base64>``: an SSH signature (``SSHSIG``,
  namespace ``reconciler-promotion``) of the raw body by one of the approver's own keys, the armored
  output of ``ssh-keygen -Y sign -n reconciler-promotion`` without its armor lines; the daemon holds only
  public keys, so nobody who reads its configuration or Secrets can sign as an approver. For an
  integration (a bot, CI), ``sha256=<hex>``: HMAC-SHA256 of the raw body with its secret.

The body names the ``identity`` acting (for an approver key it must be the key's own identity; an
integration may act for the identities its policy lists), the ``action``, a random ``nonce`` and a Unix
``timestamp``. The signature is checked over the raw bytes, in constant time, before the JSON is parsed;
a timestamp outside the allowed window is refused, and the callers refuse a nonce they have seen, so a
captured request cannot be replayed. Approvals also carry the promotion id and the exact source
revision they approve, so they cannot be moved to another promotion or revision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.promotion import sshsig
from reconciler.promotion.policy import Approver, Integration, PromotionSettings
from reconciler.refusal import Refusal
from reconciler.server.jsonbody import loads_object

SSH_PREFIX = "sshsig="
KEY_HEADER = "X-Reconciler-Key-Id"
TIMESTAMP_HEADER = "X-Reconciler-Timestamp"  # of a signed read
SIGNATURE_HEADER = "X-Reconciler-Signature"
MAX_BODY = 64 * 1024
ACTIONS = ("request", "approve", "reject", "rollback")


class SignatureError(Refusal):
    """A signed call was refused (unsigned, forged, stale, or not allowed for its key)."""


@dataclass(frozen=True)
class SignedCall:
    """A verified call: who acted, through which key, and the payload."""

    identity: str
    key_id: str
    via_integration: bool
    action: str
    nonce: str
    timestamp: float
    payload: Mapping[str, Any]


def signature(secret: str, body: bytes) -> str:
    """The header value for ``body`` signed with an integration's ``secret``."""
    # surrogatepass: a key id from a header that was not UTF-8 reaches here as lone surrogates
    return "sha256=" + hmac.new(secret.encode("utf-8", "surrogatepass"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Signer:
    """The key that signed a body: an approver's SSH key or an integration's secret."""

    key_id: str
    approver: Approver | None
    integration: Integration | None


def credentials(headers: Mapping[str, str]) -> tuple[str, str]:
    """The key id and signature a call carries; 401 when either is missing (so an unsigned call can be
    refused before its body is read)."""
    key_id = headers.get(KEY_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not key_id or not given:
        raise SignatureError(401, f"unsigned: {KEY_HEADER} and {SIGNATURE_HEADER} are required")
    return key_id, given


def authenticate(
    settings: PromotionSettings, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Signer:
    """The key that signed ``body`` (401 when none did), checked before anything parses the body.

    An approver's call must carry an SSH signature (``sshsig=``) by one of that approver's public keys;
    an integration's an HMAC (``sha256=``) with its secret. An HMAC for an approver's key id is refused
    whatever secret made it: the daemon cannot sign as a person.
    """
    if len(body) > MAX_BODY:
        raise SignatureError(413, f"body larger than {MAX_BODY} bytes")
    key_id, given = credentials(headers)
    approver = settings.approver(key_id)
    if approver is not None:
        if not given.startswith(SSH_PREFIX):
            raise SignatureError(
                401, f"{key_id} is an approver: sign with your SSH key (sshsig=...), not a shared secret"
            )
        when = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        try:
            parsed = sshsig.parse(given.removeprefix(SSH_PREFIX))
            sshsig.verify(parsed, body, approver.keys_valid(when))
        except sshsig.SSHSigError as exc:
            raise SignatureError(401, f"invalid SSH signature for {key_id}: {exc}") from None
        return Signer(key_id, approver, None)
    integration = next((i for i in settings.integrations if i.name == key_id), None)
    secret = integration.secret if integration else ""
    # compare even for an unknown key, so timing does not tell which keys exist
    expected = signature(secret or "unknown-key-" + key_id, body)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass")) or not secret:
        raise SignatureError(401, "invalid signature or unknown key")
    return Signer(key_id, None, integration)


def read_message(method: str, path: str, timestamp: str) -> bytes:
    """What a signed read signs: ``METHOD PATH?QUERY`` and the Unix time, on two lines (never a JSON
    object, so a read signature can never pass for a call)."""
    return f"{method} {path}\n{timestamp}".encode()


def authenticate_read(
    settings: PromotionSettings,
    headers: Mapping[str, str],
    method: str,
    path: str,
    *,
    now: float | None = None,
) -> Signer:
    """The approver or integration that signed this read (401 otherwise): promotions name requesters,
    approvers and commit authors, so only the people and systems of the policy may read them."""
    credentials(headers)
    raw = headers.get(TIMESTAMP_HEADER, "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise SignatureError(401, f"a signed read needs {TIMESTAMP_HEADER} (Unix seconds)")
    current = time.time() if now is None else now
    if abs(current - int(raw)) > settings.timestamp_window:
        raise SignatureError(401, "timestamp outside the allowed window (a replay, or a wrong clock)")
    return authenticate(settings, headers, read_message(method, path, raw), now=now)


def make_body(action: str, identity: str, **fields: Any) -> bytes:
    """A fresh payload (nonce, timestamp) for ``action`` by ``identity``, serialized once."""
    payload = {
        "action": action,
        "identity": identity,
        "nonce": secrets.token_hex(16),
        "timestamp": int(time.time()),
        **fields,
    }
    return json.dumps(payload, sort_keys=True).encode()


def verify(
    settings: PromotionSettings,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> SignedCall:
    """Check the key, signature, identity binding and timestamp of a call (nonces are the caller's)."""
    return check(settings, authenticate(settings, headers, body, now=now), body, now=now)


def check(
    settings: PromotionSettings, signer: Signer, body: bytes, *, now: float | None = None
) -> SignedCall:
    """The call in a body ``signer`` signed: its JSON (bounded: ``jsonbody``), identity binding and
    timestamp."""
    key_id, approver, integration = signer.key_id, signer.approver, signer.integration
    payload = loads_object(body, error=SignatureError)
    identity = payload.get("identity")
    action = payload.get("action")
    nonce = payload.get("nonce")
    timestamp = payload.get("timestamp")
    if not isinstance(identity, str) or not identity:
        raise SignatureError(400, "identity: required in the signed body")
    if action not in ACTIONS:
        raise SignatureError(400, f"action: one of {', '.join(ACTIONS)}")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
        raise SignatureError(400, "nonce: a random string of 16 to 128 characters is required")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise SignatureError(400, "timestamp: Unix seconds required")
    current = time.time() if now is None else now
    if abs(current - float(timestamp)) > settings.timestamp_window:
        raise SignatureError(401, "timestamp outside the allowed window (a replay, or a wrong clock)")
    if approver is not None and identity != approver.identity:
        raise SignatureError(403, f"key {key_id!r} may only act as itself, not as {identity!r}")
    if integration is not None and not settings.integration_may_assert(integration, identity):
        raise SignatureError(403, f"integration {key_id!r} may not act for {identity!r}")
    return SignedCall(
        identity=identity,
        key_id=key_id,
        via_integration=integration is not None,
        action=str(action),
        nonce=nonce,
        timestamp=float(timestamp),
        payload=payload,
    )
