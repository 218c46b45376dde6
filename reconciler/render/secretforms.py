"""The forms in which kustomize may print a secretGenerator's strings (literals, env-file lines, their
values and encodings), which render errors must never show."""

from __future__ import annotations

import base64
import json

SHORTEST_SECRET_LINE = 4  # lines of secret files at least this long are redacted from render errors


def secret_line_forms(raw: bytes) -> tuple[set[str], set[str]]:
    """The forms in which kustomize may print one env-file line: as text, its value, and Go's %v of its
    bytes (kustomize prints an invalid line that way). Returns (entries, values)."""
    text = raw.decode("utf-8", errors="replace")
    entries = {text, text.strip(), "[" + " ".join(str(byte) for byte in raw) + "]"}
    values = set(entries)
    if "=" in text:
        value = text.split("=", 1)[1]
        values.update({value, value.strip(), b64text(value.encode("utf-8", errors="replace"))})
    return entries, values


def b64text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def literal_forms(literal: str) -> tuple[set[str], set[str]]:
    """A secretGenerator literal as kustomize may print it: whole, its value, unquoted, encoded."""
    entries = {literal}
    values = {literal, json.dumps(literal)[1:-1]}
    value = literal.split("=", 1)[1] if "=" in literal else literal
    unquoted = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value
    for form in (value, unquoted):
        values.update({form, json.dumps(form)[1:-1], b64text(form.encode("utf-8"))})
    return entries, values
