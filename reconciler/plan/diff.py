"""Human-readable diffs between live and desired objects, with Secret values always redacted.

A Secret's values never leave the process: ``data`` and ``stringData`` entries are replaced by a short
hash of the value (so a diff still shows *that* a value changed), and the last-applied annotation that
kubectl may have stored is dropped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import difflib
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import yaml

from reconciler.objects import Body, ObjectKey

_VOLATILE_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _fingerprint(value: str, encoded: bool) -> str:
    raw = value.encode()
    if encoded:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raw = value.encode()
    return f"<redacted sha256:{hashlib.sha256(raw).hexdigest()[:10]}>"


def is_secret(body: Body) -> bool:
    """True for core/v1 Secrets."""
    return body.get("kind") == "Secret" and body.get("apiVersion") in ("v1", None)


def redact(body: Body | None) -> Body | None:
    """A copy of ``body`` safe to print: Secret values replaced by fingerprints."""
    if body is None or not is_secret(body):
        return body
    result = copy.deepcopy(body)
    _redact_secret_in_place(result)
    return result


def _redact_secret_in_place(secret: Body) -> None:
    for section, encoded in (("data", True), ("stringData", False)):
        values = secret.get(section)
        if isinstance(values, dict):
            secret[section] = {k: _fingerprint(str(v), encoded) for k, v in values.items()}
    annotations = (secret.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)


# shorter values are not scrubbed from messages: they would mangle ordinary words and say little
MIN_SCRUBBED = 4


def secret_values(bodies: Iterable[Body]) -> frozenset[str]:
    """Every Secret value of ``bodies`` in each form a message may carry it: as written, base64-decoded,
    JSON/Go-escaped, and each of its lines (a value can be quoted one line at a time)."""
    found: set[str] = set()
    for body in bodies:
        if not is_secret(body):
            continue
        for section, encoded in (("data", True), ("stringData", False)):
            values = body.get(section)
            if not isinstance(values, dict):
                continue
            for value in values.values():
                text = str(value)
                forms = [text]
                if encoded:
                    with contextlib.suppress(binascii.Error, ValueError):
                        forms.append(base64.b64decode(text, validate=True).decode("utf-8"))
                forms += [line for form in forms for line in form.splitlines()]
                forms += [json.dumps(form)[1:-1] for form in forms]
                found.update(f.strip() for f in forms if len(f.strip()) >= MIN_SCRUBBED)
    return frozenset(found)


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every one of ``values`` replaced by ``[redacted]`` (longest first). (Errors about a
    Secret also redact whatever the API server quotes back: see ``reconciler.kube.errors``.)"""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "[redacted]")
    return text


def for_display(body: Body | None, *, keep_status: bool = False) -> Body | None:
    """Redacted, without server bookkeeping (managedFields, resourceVersion, ...), for diffs."""
    if body is None:
        return None
    result = copy.deepcopy(body)
    if is_secret(result):
        _redact_secret_in_place(result)
    metadata = result.get("metadata")
    if isinstance(metadata, dict):
        for name in _VOLATILE_METADATA:
            metadata.pop(name, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
            if not annotations:
                metadata.pop("annotations")
    if not keep_status:
        result.pop("status", None)
    return result


def _yaml(body: Any) -> list[str]:
    if body is None:
        return []
    return yaml.safe_dump(body, sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def unified_diff(key: ObjectKey, live: Body | None, desired: Body | None) -> str:
    """A unified diff from live to desired (both redacted), "" when they print the same."""
    before, after = _yaml(for_display(live)), _yaml(for_display(desired))
    lines = difflib.unified_diff(before, after, fromfile=f"live/{key}", tofile=f"desired/{key}")
    return "".join(lines)
