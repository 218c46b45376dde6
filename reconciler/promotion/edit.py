"""The change a promotion makes to the target overlay, and nothing else.

This module owns the rule of what a promotion changes in the target kustomization's ``images:`` entries
and the in-place edit that writes it:

* ``read_images``  the ``images:`` entries of a kustomization (only the fields kustomize knows);
* ``merge_images`` the target's entries with the promoted values of the source's applied: the version
  (``newTag`` and ``digest``) is promoted, the location (``newName``) of an entry the target already has
  is the target's own and never changes; an entry the target lacks is appended as the source has it.
  A digest pinned in the target is replaced only by a digest from the source: a tag-only source for a
  pinned target is refused (the tag would not change what runs). ``restore=True`` (rollbacks to the
  target's own earlier values) sets ``newTag`` and ``digest`` exactly, removing what the restored entry
  lacks;
* ``set_images``   writes those entries into the kustomization text value by value: each changed scalar
  is located by the YAML parser's marks and only its characters are replaced (in its own quoting
  style); a new field or entry is inserted in the block's own indentation and style (block, the
  unindented style of ``kustomize edit set image``, or flow), with the file's line endings. Every other
  byte (comments inside the block too) stays, and the result must parse to exactly the expected
  document, or the edit is refused.

Keys kustomize would read but this module would not (``IMAGES:``, ``NewTag:``: kustomize folds key case),
aliases into the block and merge keys are refused with an ``EditError`` that says so.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

IMAGE_FIELDS = ("name", "newName", "newTag", "digest")
VERSION_FIELDS = ("newTag", "digest")
_NULL = "tag:yaml.org,2002:null"
_FOLDED = {key.lower(): key for key in IMAGE_FIELDS}

Image = dict[str, str]


class EditError(ValueError):
    """The kustomization cannot be edited safely; the message says why."""


# -- reading -----------------------------------------------------------------------------------------


@dataclass
class _Field:
    """One ``key: value`` pair of an image entry, as written."""

    key: ScalarNode
    value: ScalarNode

    @property
    def text(self) -> str:
        """The value ("" for a null or empty one, which kustomize treats as unset)."""
        return "" if self.value.tag == _NULL else str(self.value.value)


@dataclass
class _Entry:
    """One entry of the ``images:`` sequence."""

    node: MappingNode
    fields: dict[str, _Field]

    def image(self) -> Image:
        return {k: self.fields[k].text for k in IMAGE_FIELDS if k in self.fields and self.fields[k].text}

    def pairs(self) -> list[tuple[Node, Node]]:
        return list(self.node.value)


@dataclass
class _Located:
    """Where the ``images:`` block is in the text (key None: the file has none)."""

    root: MappingNode | None
    key: ScalarNode | None = None
    value: Node | None = None
    entries: list[_Entry] = field(default_factory=list)


def _walk(node: Node, seen: dict[int, int]) -> None:
    """Count how often every node is reached (an alias reaches its anchor's node again)."""
    seen[id(node)] = seen.get(id(node), 0) + 1
    if seen[id(node)] > 1:
        return
    if isinstance(node, SequenceNode):
        for item in node.value:
            _walk(item, seen)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            _walk(key, seen)
            _walk(value, seen)


def _subtree(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, SequenceNode):
        for item in node.value:
            yield from _subtree(item)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield from _subtree(key)
            yield from _subtree(value)


def _compose(text: str, where: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise EditError(f"{where}: not valid YAML{at}") from None


def _locate(text: str, where: str) -> _Located:
    root = _compose(text, where)
    if root is None:
        return _Located(None)
    if not isinstance(root, MappingNode):
        raise EditError(f"{where}: expected a mapping at the top level")
    located = _images_key(root, where)
    if located.value is None:
        return located
    value = located.value
    if isinstance(value, ScalarNode) and value.tag == _NULL:
        return located
    if not isinstance(value, SequenceNode):
        raise EditError(f"{where}: images must be a list")
    _refuse_aliases(root, value, where)
    for index, item in enumerate(value.value):
        located.entries.append(_entry(item, f"{where}: images[{index}]"))
    return located


def _images_key(root: MappingNode, where: str) -> _Located:
    """The top-level ``images`` key and value (refusing merge keys, a duplicate, another case)."""
    located = _Located(root)
    for key, value in root.value:
        name = key.value if isinstance(key, ScalarNode) else None
        if name == "<<":
            raise EditError(f"{where}: merge keys (<<) at the top level are not supported")
        if not isinstance(name, str) or name.lower() != "images":
            continue
        if name != "images":
            raise EditError(
                f"{where}: the key {name!r} (line {key.start_mark.line + 1}) is not 'images': kustomize "
                "folds the case of keys and would read it as images, the promotion would not: write it as "
                "images"
            )
        if located.key is not None:
            raise EditError(f"{where}: images appears twice")
        located.key, located.value = key, value
    return located


def _refuse_aliases(root: MappingNode, value: Node, where: str) -> None:
    """Anchors and aliases reaching into or out of the images block would be edited twice or not at all."""
    seen: dict[int, int] = {}
    _walk(root, seen)
    start, end = value.start_mark.index, value.end_mark.index
    for node in _subtree(value):
        if seen.get(id(node), 0) > 1 or not start <= node.start_mark.index <= end:
            raise EditError(f"{where}: anchors and aliases in the images: block are not supported")


def _entry(item: Node, where: str) -> _Entry:
    if not isinstance(item, MappingNode):
        raise EditError(f"{where} needs a name")
    fields: dict[str, _Field] = {}
    for key, value in item.value:
        name = key.value if isinstance(key, ScalarNode) else None
        if not isinstance(name, str):
            continue
        if name == "<<":
            raise EditError(f"{where}: merge keys (<<) are not supported")
        if name.lower() in _FOLDED and name not in IMAGE_FIELDS:
            raise EditError(
                f"{where}: the key {name!r} (line {key.start_mark.line + 1}) is not "
                f"{_FOLDED[name.lower()]!r}: kustomize folds the case of keys and would read it, the "
                f"promotion would not: write it as {_FOLDED[name.lower()]}"
            )
        if name not in IMAGE_FIELDS:
            continue
        if name in fields:
            raise EditError(f"{where}: {name} appears twice")
        if not isinstance(value, ScalarNode) or value.style in ("|", ">"):
            raise EditError(f"{where}.{name} must be a one-line string")
        fields[name] = _Field(key, value)
    if "name" not in fields or not fields["name"].text:
        raise EditError(f"{where} needs a name")
    return _Entry(item, fields)


def _document(text: str, where: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise EditError(f"{where}: not valid YAML") from None
    if not isinstance(document, dict):
        raise EditError(f"{where}: expected a mapping at the top level")
    return document


def read_images(text: str, where: str = "kustomization.yaml") -> list[Image]:
    """The ``images:`` entries (only the fields kustomize knows, empty ones left out), in file order.

    Values are the scalars as written (``newTag: 1.10`` is "1.10", not the float 1.1)."""
    return [entry.image() for entry in _locate(text, where).entries]


# -- the rule ----------------------------------------------------------------------------------------


def _ordered(entry: Mapping[str, str]) -> Image:
    return {k: str(entry[k]) for k in IMAGE_FIELDS if entry.get(k)}


def merge_images(
    target: Sequence[Mapping[str, str]],
    source: Sequence[Mapping[str, str]],
    *,
    restore: bool = False,
    where: str = "the target kustomization",
) -> list[Image]:
    """The target's entries with the promoted values of ``source`` applied (see the module docstring).

    Every target entry keeps its place and its ``newName``; a source image the target lacks is appended
    as the source has it. Raises ``EditError`` when a tag-only source meets a digest pinned in the target
    (unless ``restore``)."""
    merged = [_ordered(entry) for entry in target]
    for entry in source:
        name = str(entry["name"])
        versions = {k: str(entry[k]) for k in VERSION_FIELDS if entry.get(k)}
        positions = [index for index, current in enumerate(merged) if current["name"] == name]
        if not positions:
            if len(_ordered(entry)) > 1:
                merged.append(_ordered(entry))
            continue
        if not versions and not restore:
            continue  # nothing to promote: a source entry that only renames leaves the target's alone
        for index in positions:
            current = merged[index]
            if not restore and current.get("digest") and "digest" not in versions:
                raise EditError(
                    f"{where}: {name} is pinned to digest {current['digest']} there, and the source "
                    f"promotes only the tag {versions.get('newTag', '')!r}: the pin would keep what runs "
                    "unchanged. Pin a digest in the source, or remove the pin from the target first"
                )
            updated = {k: v for k, v in current.items() if k not in VERSION_FIELDS}
            merged[index] = _ordered({**updated, **versions})
    return merged


# -- writing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str
    order: int


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The index just after the line break ending the line of ``index`` (len(text) at the end)."""
    found = text.find("\n", index)
    return len(text) if found < 0 else found + 1


def _plain_ok(value: str, flow: bool) -> bool:
    """True when ``value`` written plain reads back as exactly this string, in block and flow context."""
    if not value or value != value.strip() or any(c in value for c in "#\n\r\t"):
        return False
    if value[0] in "-?:,[]{}&*!|>'\"%@`" or (flow and any(c in value for c in ",[]{}")):
        return False
    try:
        block, flow_map = yaml.safe_load(f"k: {value}\n"), yaml.safe_load(f"{{k: {value}}}")
        return bool(block == {"k": value} and flow_map == {"k": value})
    except yaml.YAMLError:
        return False


def _render(value: str, style: str | None, flow: bool, quote: str) -> str:
    """``value`` as a YAML scalar in ``style`` (None: plain when that reads back as the same string,
    else ``quote``)."""
    if style is None and _plain_ok(value, flow):
        return value
    if (style or quote) == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


class _Editor:
    """Collects the splices that turn the located block into ``images``."""

    def __init__(self, text: str, located: _Located, where: str) -> None:
        self.text = text
        self.located = located
        self.where = where
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.splices: list[_Splice] = []
        quoted = [
            n.style
            for n in (_subtree(located.value) if located.value is not None else ())
            if isinstance(n, ScalarNode) and n.style in ("'", '"')
        ]
        self.quote = quoted[0] if quoted else '"'

    def add(self, start: int, end: int, text: str) -> None:
        self.splices.append(_Splice(start, end, text, len(self.splices)))

    def result(self) -> str:
        out: list[str] = []
        position = 0
        for splice in sorted(self.splices, key=lambda s: (s.start, s.end, s.order)):
            if splice.start < position:
                raise EditError(f"{self.where}: the images: block could not be edited in place")
            out.append(self.text[position : splice.start])
            out.append(splice.text)
            position = splice.end
        out.append(self.text[position:])
        return "".join(out)

    def style_of(self, key: str) -> str | None:
        """The quoting of ``key``'s values elsewhere in the block (None: plain or none written yet)."""
        for entry in self.located.entries:
            if key in entry.fields and entry.fields[key].text:
                style = entry.fields[key].value.style
                return style if style in ("'", '"') else None
        return None

    # -- one entry ------------------------------------------------------------------------------------
    def entry(self, entry: _Entry, want: Mapping[str, str]) -> None:
        flow = bool(entry.node.flow_style)
        for key in IMAGE_FIELDS[1:]:
            have = entry.fields[key].text if key in entry.fields else ""
            value = want.get(key, "")
            if have == value:
                continue
            if not value:
                self.remove(entry, key)
            elif key in entry.fields:
                node = entry.fields[key].value
                if node.start_mark.index == node.end_mark.index:  # `key:` with no value written
                    self.add(node.start_mark.index, node.end_mark.index, " " + self.scalar(value, key, flow))
                else:
                    style = node.style if node.tag != _NULL else None
                    rendered = _render(value, style, flow, self.quote)
                    self.add(node.start_mark.index, node.end_mark.index, rendered)
            else:
                self.insert(entry, key, value, want)

    def scalar(self, value: str, key: str, flow: bool) -> str:
        return _render(value, self.style_of(key), flow, self.quote)

    def remove(self, entry: _Entry, key: str) -> None:
        pairs = entry.pairs()
        index = next(i for i, (k, _) in enumerate(pairs) if k is entry.fields[key].key)
        key_node, value_node = pairs[index]
        if entry.node.flow_style:
            if index > 0:
                self.add(pairs[index - 1][1].end_mark.index, value_node.end_mark.index, "")
            else:
                self.add(key_node.start_mark.index, pairs[index + 1][0].start_mark.index, "")
            return
        start = _line_start(self.text, key_node.start_mark.index)
        if self.text[start : key_node.start_mark.index].strip():  # the first key, on the `- ` line
            self.add(key_node.start_mark.index, pairs[index + 1][0].start_mark.index, "")
        else:
            self.add(start, _line_end(self.text, value_node.end_mark.index), "")

    def insert(self, entry: _Entry, key: str, value: str, want: Mapping[str, str]) -> None:
        """A new field after the last kept field that precedes it in kustomize's order."""
        kept = [k for k in IMAGE_FIELDS[: IMAGE_FIELDS.index(key)] if k in entry.fields and want.get(k)]
        kept = kept or ["name"]
        after = entry.fields[kept[-1]].value
        flow = bool(entry.node.flow_style)
        rendered = f"{key}: {self.scalar(value, key, flow)}"
        if flow:
            self.add(after.end_mark.index, after.end_mark.index, f", {rendered}")
            return
        column = entry.fields["name"].key.start_mark.column
        position = _line_end(self.text, after.end_mark.index)
        lead = "" if self.text[:position].endswith("\n") else self.newline
        self.add(position, position, f"{lead}{' ' * column}{rendered}{self.newline}")

    # -- new entries ------------------------------------------------------------------------------------
    def flow_entry(self, image: Mapping[str, str]) -> str:
        fields = [f"{k}: {self.scalar(str(image[k]), k, True)}" for k in IMAGE_FIELDS if image.get(k)]
        return "{" + ", ".join(fields) + "}"

    def block_entry(self, image: Mapping[str, str], dash: int, column: int, flow_items: bool) -> str:
        head = " " * dash + "-" + " " * max(1, column - dash - 1)
        if flow_items:
            return head + self.flow_entry(image) + self.newline
        fields = [f"{k}: {self.scalar(str(image[k]), k, False)}" for k in IMAGE_FIELDS if image.get(k)]
        lines = [head + fields[0], *(" " * column + f for f in fields[1:])]
        return "".join(line + self.newline for line in lines)

    def sequence_indent(self) -> int:
        """How far this file indents a block sequence under its key (2 when it has none)."""
        root = self.located.root
        for key, value in root.value if root is not None else ():
            if isinstance(value, SequenceNode) and not value.flow_style:
                return max(0, int(value.start_mark.column) - int(key.start_mark.column))
        return 2

    def append(self, images: Sequence[Mapping[str, str]]) -> None:
        located, value = self.located, self.located.value
        if isinstance(value, SequenceNode) and value.value:
            items = value.value
            last = items[-1]
            if value.flow_style:
                lines = {item.start_mark.line for item in items}
                column = items[-1].start_mark.column
                separator = ", " if len(lines) < 2 else "," + self.newline + " " * column
                position = last.end_mark.index
                self.add(position, position, "".join(separator + self.flow_entry(i) for i in images))
                return
            dash = value.start_mark.column
            first = items[0]
            column = first.start_mark.column if first.start_mark.line == value.start_mark.line else dash + 2
            flow_items = bool(located.entries[-1].node.flow_style)
            # after the last entry's last scalar (a block mapping's end mark is at the next token)
            scalars = [n.end_mark.index for n in _subtree(last) if isinstance(n, ScalarNode)]
            end = last.end_mark.index if flow_items else max(scalars)
            position = _line_end(self.text, end)
            lead = "" if self.text[:position].endswith("\n") else self.newline
            text = "".join(self.block_entry(i, dash, column, flow_items) for i in images)
            self.add(position, position, lead + text)
            return
        if isinstance(value, SequenceNode):  # `images: []`
            position = value.end_mark.index - 1
            if self.text[position] != "]":
                raise EditError(f"{self.where}: the images: block could not be edited in place")
            self.add(position, position, ", ".join(self.flow_entry(i) for i in images))
            return
        if value is not None and value.start_mark.index != value.end_mark.index:  # `images: null`
            entries = ", ".join(self.flow_entry(i) for i in images)
            self.add(value.start_mark.index, value.end_mark.index, f"[{entries}]")
            return
        # `images:` with nothing after it, or no images key at all: a block in the file's style
        indent = self.sequence_indent()
        if located.key is not None:
            base = located.key.start_mark.column
            position = _line_end(self.text, located.key.end_mark.index)
            lead = "" if self.text[:position].endswith("\n") or not self.text else self.newline
            text = "".join(self.block_entry(i, base + indent, base + indent + 2, False) for i in images)
            self.add(position, position, lead + text)
            return
        position = len(self.text)
        lead = "" if not self.text or self.text.endswith("\n") else self.newline
        text = "".join(self.block_entry(i, indent, indent + 2, False) for i in images)
        self.add(position, position, f"{lead}images:{self.newline}{text}")


def set_images(text: str, images: Sequence[Mapping[str, str]], where: str = "kustomization.yaml") -> str:
    """``text`` with its ``images:`` entries changed to ``images``, value by value.

    ``images`` holds the file's entries in their order (only their ``newName``/``newTag``/``digest``
    may differ), then any new ones, which are appended. Only the changed values' characters change;
    the result is checked to parse to the file's document with exactly those values changed."""
    located = _locate(text, where)
    wanted = [_ordered(image) for image in images]
    current = [entry.image() for entry in located.entries]
    if len(wanted) < len(current) or [w["name"] for w in wanted[: len(current)]] != [
        c["name"] for c in current
    ]:
        raise EditError(
            f"{where}: a promotion changes values and appends entries; it never removes or moves one"
        )
    if wanted == current:
        return text
    editor = _Editor(text, located, where)
    expected = copy.deepcopy(_document(text, where))
    raw = expected.get("images")
    expected_images: list[Any] = list(raw) if isinstance(raw, list) else []
    for index, (entry, want) in enumerate(zip(located.entries, wanted, strict=False)):
        editor.entry(entry, want)
        for key in IMAGE_FIELDS[1:]:
            have = entry.fields[key].text if key in entry.fields else ""
            if have != want.get(key, ""):
                if want.get(key):
                    expected_images[index][key] = want[key]
                elif key in expected_images[index]:
                    del expected_images[index][key]
    if wanted[len(current) :]:
        editor.append(wanted[len(current) :])
        expected_images.extend(dict(image) for image in wanted[len(current) :])
    if located.value is not None or expected_images:
        expected["images"] = expected_images
    result = editor.result()
    if _document(result, where) != expected or read_images(result, where) != wanted:
        raise EditError(f"{where}: the images: block could not be edited without touching other fields")
    return result


def apply(
    text: str,
    source: Sequence[Mapping[str, str]],
    where: str = "kustomization.yaml",
    *,
    restore: bool = False,
) -> tuple[str, list[Image], list[Image]]:
    """The whole edit of one kustomization: (new text, the entries before, the entries after)."""
    current = read_images(text, where)
    merged = merge_images(current, source, restore=restore, where=where)
    return (text if merged == current else set_images(text, merged, where)), current, merged
