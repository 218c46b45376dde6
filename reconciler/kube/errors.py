"""Our error hierarchy for API server failures.

Each message starts with the object (``Deployment/shop/api``) and carries the API server's own message,
truncated; request bodies are never included, and in a message about a Secret every value the API
server quotes back (``Invalid value: "..."``) is redacted, so a Secret's values cannot leak through an
error.
``TransientError`` is the only one worth retrying.
"""

from __future__ import annotations

import json
import re

_MAX_MESSAGE = 1000
# server-side apply's type errors print the value: ".data.pw: expected string, got &value...{Value:...}"
_TYPED_VALUE = re.compile(r"got &?value\.valueUnstructured\{.*")
# 500s that are not the server's fault: the object cannot be converted or typed (a permanent refusal)
_UNTYPABLE = ("failed to create typed patch object", "failed to convert new object")
_QUOTED_VALUE = re.compile(r'(Invalid value|Unsupported value|Duplicate value|Forbidden): "(?:[^"\\]|\\.)*"')


class KubeError(Exception):
    """An API request failed."""

    retryable = False

    def __init__(self, subject: str, message: str, status: int = 0, reason: str = "") -> None:
        self.subject = subject
        self.status = status
        self.reason = reason
        if subject.startswith("Secret/"):
            message = _QUOTED_VALUE.sub(lambda m: f"{m.group(1)}: [redacted]", message)
            message = _TYPED_VALUE.sub("got [redacted]", message)
        self.api_message = message[:_MAX_MESSAGE] + (" [truncated]" if len(message) > _MAX_MESSAGE else "")
        super().__init__(f"{subject}: {self.api_message}" if subject else self.api_message)


class NotFoundError(KubeError):
    """404: the object (or its namespace) does not exist."""


class ConflictError(KubeError):
    """409: a field-manager conflict (apply without force) or an optimistic-concurrency conflict."""


class AlreadyExistsError(KubeError):
    """409 AlreadyExists on create."""


class InvalidError(KubeError):
    """422: the object fails validation."""


class ImmutableFieldError(InvalidError):
    """422 where the server says a field is immutable: the object must be recreated to change it."""


class ForbiddenError(KubeError):
    """403: RBAC denies the request (or an admission webhook refused it)."""


class UnauthorizedError(KubeError):
    """401: our credentials are not accepted."""


class NoMatchError(KubeError):
    """The API server does not serve this kind (its CRD may not be installed or established yet)."""


class BadRequestError(KubeError):
    """400: the request itself is malformed (for example an unparsable manifest)."""


class TransientError(KubeError):
    """429, 5xx, timeouts and connection failures: retry with backoff."""

    retryable = True


def message_of(body: bytes | str) -> tuple[str, str]:
    """The ``message`` and ``reason`` of a Kubernetes Status body (falls back to the raw text)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_MESSAGE], ""
    if isinstance(status, dict):
        return str(status.get("message") or text.strip()), str(status.get("reason") or "")
    return text.strip()[:_MAX_MESSAGE], ""


def from_status(subject: str, status: int, body: bytes | str) -> KubeError:
    """The error type for an HTTP status and Status body."""
    message, reason = message_of(body)
    if status == 404:
        return NotFoundError(subject, message, status, reason)
    if status == 409:
        if reason == "AlreadyExists":
            return AlreadyExistsError(subject, message, status, reason)
        return ConflictError(subject, message, status, reason)
    if status == 422:
        if "immutable" in message.lower():
            return ImmutableFieldError(subject, message, status, reason)
        return InvalidError(subject, message, status, reason)
    if status == 403:
        return ForbiddenError(subject, message, status, reason)
    if status == 401:
        return UnauthorizedError(subject, message, status, reason)
    if status == 400:
        return BadRequestError(subject, message, status, reason)
    if status == 500 and message.startswith(_UNTYPABLE):
        return InvalidError(subject, message, status, reason)
    if status == 429 or status >= 500:
        return TransientError(subject, message, status, reason)
    return KubeError(subject, message, status, reason)
