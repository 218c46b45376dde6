"""Reading YAML and keys as kustomize's Go decoders do: Go's case folding of keys (``go_fold``), and a
strict loader that refuses duplicate and merge keys and keeps timestamps as text."""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


def go_fold(text: str) -> str:
    """``text`` under Unicode simple case folding, as Go's encoding/json compares keys.

    Two keys name the same field for kustomize exactly when their folds are equal. Unlike
    ``str.casefold`` this never expands a character (``ß`` stays ``ß``, as in Go), while ``ſ`` folds to
    ``s``, the Kelvin sign to ``k`` and the Angstrom sign to ``å``.
    """
    return "".join(_fold_char(ch) for ch in text)


def _fold_char(ch: str) -> str:
    folded = ch.casefold()
    if len(folded) == 1:
        return folded
    lower = ch.lower()  # full folding expands this one (ß, ẞ, ᾈ): its simple folding is its lowercase
    return lower if len(lower) == 1 else ch


def shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class KeyProblem(yaml.YAMLError):
    """A key the walker refuses, found while loading YAML (duplicates, merge keys)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made to agree with kustomize's decoders where they would differ.

    Duplicate keys and YAML merge keys are refused rather than resolved, and timestamps stay strings
    (Go's YAML decoders keep them as text, and so must the paths the walker checks)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise KeyProblem(
                    f"line {line}: YAML merge keys (<<) are refused in files kustomize reads as "
                    "configuration: write the keys out"
                )
            key = self.construct_object(key_node, deep=True)
            try:
                marker = (type(key), key)
                hash(marker)
            except TypeError:
                continue  # an unhashable key: the safe constructor refuses it below
            if marker in seen:
                raise KeyProblem(
                    f"the key {shown(key)} appears twice (lines {seen[marker]} and {line}); "
                    "kustomize would silently use one of them: keep one"
                )
            seen[marker] = line
        return super().construct_mapping(node, deep)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=StrictLoader))  # a SafeLoader subclass
