"""The change a promotion makes to the target overlay, and nothing else.

* ``read_images``  the ``images:`` entries of a kustomization;
* ``merge_images`` target entries updated from the source's (``newName``/``newTag``/``digest`` per image
  name), the target's other entries untouched, the source's new names appended;
* ``set_images``   rewrites only the ``images:`` block of the kustomization text: every other byte of
  the file (comments, order, formatting) stays as it was, and the result is checked to parse to the
  same document with only ``images`` changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

IMAGE_FIELDS = ("name", "newName", "newTag", "digest")
_TOP_KEY = re.compile(r"^images\s*:", re.MULTILINE)

Image = dict[str, str]


class EditError(ValueError):
    """The kustomization cannot be edited safely; the message says why."""


def _document(text: str, where: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise EditError(f"{where}: not valid YAML") from None
    if not isinstance(document, dict):
        raise EditError(f"{where}: expected a mapping at the top level")
    return document


def read_images(text: str, where: str = "kustomization.yaml") -> list[Image]:
    """The ``images:`` entries (only the fields kustomize knows), in file order."""
    raw = _document(text, where).get("images") or []
    if not isinstance(raw, list):
        raise EditError(f"{where}: images must be a list")
    images: list[Image] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise EditError(f"{where}: images[{index}] needs a name")
        images.append({k: str(entry[k]) for k in IMAGE_FIELDS if entry.get(k) is not None})
    return images


def merge_images(target: Sequence[Mapping[str, str]], source: Sequence[Mapping[str, str]]) -> list[Image]:
    """The target's entries with every image the source names set to the source's values."""
    by_name = {entry["name"]: dict(entry) for entry in source}
    merged: list[Image] = []
    for entry in target:
        merged.append(by_name.pop(entry["name"]) if entry["name"] in by_name else dict(entry))
    merged.extend(by_name.values())
    return merged


def _scalar(value: str) -> str:
    plain = value and not value.startswith((" ", "'", '"')) and yaml.safe_load(value) == value
    return value if plain and ":" not in value and "#" not in value else json.dumps(value)


def _block(images: Sequence[Mapping[str, str]]) -> str:
    lines = ["images:"]
    for entry in images:
        fields = [k for k in IMAGE_FIELDS if entry.get(k)]
        for position, key in enumerate(fields):
            prefix = "  - " if position == 0 else "    "
            lines.append(f"{prefix}{key}: {_scalar(str(entry[key]))}")
    return "\n".join(lines) + "\n"


def set_images(text: str, images: Sequence[Mapping[str, str]], where: str = "kustomization.yaml") -> str:
    """``text`` with its ``images:`` block replaced by ``images`` (appended when there was none)."""
    before = _document(text, where)
    match = _TOP_KEY.search(text)
    if match is None:
        result = text + ("" if not text or text.endswith("\n") else "\n") + _block(images)
    else:
        lines = text[match.start() :].splitlines(keepends=True)
        end = 1
        last_content = 1
        while end < len(lines):
            line = lines[end]
            stripped = line.strip()
            if line.startswith((" ", "\t", "-")) and stripped:
                end += 1
                last_content = end
            elif not stripped or stripped.startswith("#"):
                end += 1
            else:
                break
        block_length = sum(len(line) for line in lines[:last_content])
        result = text[: match.start()] + _block(images) + text[match.start() + block_length :]
    after = _document(result, where)
    expected = {**before, "images": [dict(i) for i in images]}
    if after != expected:
        raise EditError(f"{where}: the images: block could not be rewritten without touching other fields")
    return result
