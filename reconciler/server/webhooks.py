"""Push webhooks from GitHub, GitLab, Gitea/Forgejo, Bitbucket Server and generic HMAC senders.

Pure functions: which provider sent a request (by its headers), whether its signature is valid (HMAC
over the raw body, constant-time comparison), and what it says (event kind, delivery id, branch ref,
new commit). A payload is only a hint: the daemon always fetches from its configured remote.

Provider contracts:

* GitHub: ``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-Hub-Signature-256: sha256=<hex>``;
* GitLab: ``X-Gitlab-Event``, ``X-Gitlab-Token: <the secret>`` (compared in constant time);
* Gitea/Forgejo: ``X-Gitea-Event``/``X-Forgejo-Event``, ``X-Gitea-Delivery``, ``X-Gitea-Signature: <hex>``;
* Bitbucket Server: ``X-Event-Key``, ``X-Request-Id``, ``X-Hub-Signature: sha256=<hex>``;
* generic: ``X-Reconciler-Signature: sha256=<hex>``, optional ``X-Reconciler-Event`` and
  ``X-Reconciler-Delivery``; body ``{"ref": "refs/heads/main", "after": "<sha>"}`` (both optional).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.refusal import Refusal
from reconciler.server.jsonbody import loads_object

MAX_REF = 256


class WebhookError(Refusal):
    """A webhook that must be refused."""


@dataclass(frozen=True)
class Push:
    """What a webhook tells us."""

    provider: str
    event: str
    delivery: str
    kind: str  # push | ping | other
    ref: str = ""
    after: str = ""


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def detect(headers: Mapping[str, str]) -> str:
    """The provider that sent a request, by its headers ("" when unknown)."""
    if _header(headers, "X-Gitea-Event") or _header(headers, "X-Forgejo-Event"):
        return "gitea"
    if _header(headers, "X-Gitlab-Event"):
        return "gitlab"
    if _header(headers, "X-Event-Key"):
        return "bitbucket"
    if _header(headers, "X-GitHub-Event"):
        return "github"
    if _header(headers, "X-Reconciler-Signature") or _header(headers, "X-Reconciler-Event"):
        return "generic"
    return ""


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    # header values arrive decoded with surrogate escapes for bytes that are not UTF-8: compare the
    # bytes without raising (a plain .encode() would, and a crash is a 500)
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def signature_header(provider: str, headers: Mapping[str, str]) -> str:
    """The signature (or token) the request carries for ``provider`` ("" when it carries none)."""
    if provider == "gitlab":
        return _header(headers, "X-Gitlab-Token")
    if provider == "gitea":
        return _header(headers, "X-Gitea-Signature") or _header(headers, "X-Forgejo-Signature")
    name = {
        "github": "X-Hub-Signature-256",
        "bitbucket": "X-Hub-Signature",
        "generic": "X-Reconciler-Signature",
    }.get(provider)
    return _header(headers, name) if name else ""


def verify(provider: str, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """True when the request carries a valid signature (or token) for ``secret``."""
    given = signature_header(provider, headers).strip()
    if not given:
        return False
    if provider == "gitlab":
        return _same(given, secret)
    if provider == "gitea":
        return _same(given.lower(), sign(secret, body))
    if provider not in ("github", "bitbucket", "generic") or not given.lower().startswith("sha256="):
        return False
    return _same(given[7:].lower(), sign(secret, body))


def _event(provider: str, headers: Mapping[str, str]) -> tuple[str, str]:
    if provider == "github":
        return _header(headers, "X-GitHub-Event"), _header(headers, "X-GitHub-Delivery")
    if provider == "gitlab":
        return _header(headers, "X-Gitlab-Event"), _header(headers, "X-Gitlab-Event-UUID")
    if provider == "gitea":
        event = _header(headers, "X-Gitea-Event") or _header(headers, "X-Forgejo-Event")
        return event, _header(headers, "X-Gitea-Delivery") or _header(headers, "X-Forgejo-Delivery")
    if provider == "bitbucket":
        return _header(headers, "X-Event-Key"), _header(headers, "X-Request-Id")
    return _header(headers, "X-Reconciler-Event") or "push", _header(headers, "X-Reconciler-Delivery")


def _kind(provider: str, event: str) -> str:
    event = event.lower()
    if provider in ("github", "gitea"):
        return {"push": "push", "ping": "ping"}.get(event, "other")
    if provider == "gitlab":
        return {"push hook": "push", "system hook": "other"}.get(event, "other")
    if provider == "bitbucket":
        return {"repo:refs_changed": "push", "diagnostics:ping": "ping"}.get(event, "other")
    return {"push": "push", "ping": "ping"}.get(event, "other")


def parse(provider: str, headers: Mapping[str, str], body: bytes) -> Push:
    """Read the event, delivery id, ref and new commit; malformed, too deep or ambiguous JSON (see
    ``jsonbody``) is a 400."""
    event, delivery = _event(provider, headers)
    kind = _kind(provider, event)
    if kind != "push":
        return Push(provider, event, delivery, kind)
    payload: dict[str, Any] = loads_object(body, error=WebhookError) if body.strip() else {}
    ref, after = "", ""
    if provider == "bitbucket":
        changes = payload.get("changes")
        if isinstance(changes, list) and changes and isinstance(changes[0], dict):
            ref = str(changes[0].get("refId") or "")
            after = str(changes[0].get("toHash") or "")
    else:
        ref = str(payload.get("ref") or "")
        after = str(payload.get("after") or payload.get("checkout_sha") or "")
    if len(ref) > MAX_REF:
        raise WebhookError(400, f"ref longer than {MAX_REF} characters")
    if after and (len(after) not in (40, 64) or any(c not in "0123456789abcdef" for c in after.lower())):
        after = ""
    return Push(provider, event, delivery, "push", ref, after.lower())
