"""Reading the shapes of the kustomization fields the walker interprets: lists, strings and mappings
checked before use, keys checked as kustomize reads them, strictly loaded YAML files and inline YAML,
and the entries that name a path (patches, replacements)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.render.fields import REPLACEMENT_FIELDS
from reconciler.render.inputs import RestrictionError
from reconciler.render.paths import PathResolver, is_dir
from reconciler.render.yamlkeys import KeyProblem, go_fold, load_all, shown


class ShapeReader(PathResolver):
    """Shape and key checks, and YAML loading, on top of the path resolution."""

    def strings(self, origin: Path, where: str, value: object) -> list[str]:
        """A list of strings (absent or null is empty); anything else is refused."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise RestrictionError(f"{self.display(origin)}: {where} must be a list of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise RestrictionError(
                    f"{self.display(origin)}: {where}[{index}] must be a string, not {type(item).__name__}"
                )
        return list(value)

    def string(self, origin: Path, where: str, value: object) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise RestrictionError(
            f"{self.display(origin)}: {where} must be a string, not {type(value).__name__}"
        )

    def mappings(self, origin: Path, where: str, value: object) -> list[dict[Any, Any]]:
        """A list of mappings (absent or null is empty); anything else is refused."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise RestrictionError(f"{self.display(origin)}: {where} must be a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise RestrictionError(f"{self.display(origin)}: {where}[{index}] must be a mapping")
        return list(value)

    def mapping(self, origin: Path, where: str, value: object) -> dict[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RestrictionError(f"{self.display(origin)}: {where} must be a mapping")
        return value

    def check_keys(
        self, origin: Path, where: str, mapping: Mapping[Any, Any], fields: Iterable[str], *, closed: bool
    ) -> None:
        """Refuse keys kustomize would read differently from the walker.

        Non-string keys, two keys that fold together, and a key that folds to one of ``fields`` without
        being exactly it; when ``closed``, also any key that is not one of ``fields``."""
        prefix = f"{self.display(origin)}: {where + ': ' if where else ''}"
        folded: dict[str, str] = {}
        for key in mapping:
            if not isinstance(key, str):
                raise RestrictionError(
                    f"{prefix}key {shown(key)} is not text; kustomize would read it as text, perhaps as "
                    "another field: write it as a plain string"
                )
            fold = go_fold(key)
            if fold in folded:
                raise RestrictionError(
                    f"{prefix}keys {shown(folded[fold])} and {shown(key)} name the same field for "
                    "kustomize (it matches keys case-insensitively, Unicode folding included, and one "
                    "would silently win): keep one, spelled exactly"
                )
            folded[fold] = key
        known = {go_fold(name): name for name in fields}
        for key in mapping:
            if key in known.values():
                continue
            field_name = known.get(go_fold(key))
            if field_name is not None:
                raise RestrictionError(
                    f"{prefix}key {shown(key)} is read by kustomize as {field_name!r} (it matches keys "
                    f"case-insensitively, Unicode folding included): write it exactly as {field_name!r}"
                )
            if closed:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RestrictionError(
                    f"{prefix}key {shown(key)} is not a kustomization field of kustomize v5{hint}; "
                    "remove it or correct its spelling"
                )

    def load(self, path: Path, shown: Path) -> list[Any]:
        """The YAML documents of a file the walker interprets, loaded strictly."""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise RestrictionError(f"{self.display(shown)}: is not UTF-8 text") from None
        try:
            return load_all(text)
        except RecursionError:
            raise RestrictionError(f"{self.display(shown)}: nests too deep to be checked") from None
        except KeyProblem as exc:
            raise RestrictionError(f"{self.display(shown)}: {exc.message}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RestrictionError(f"{self.display(shown)}: not valid YAML{where}") from None

    def inline_or_path(
        self, origin: Path, where: str, value: str, base: Path, *, strict: bool
    ) -> tuple[list[Any], Path | None]:
        """An entry kustomize reads as inline YAML when it parses as such, else as a file path.

        Both readings are checked: the value as a path may never leave the repository, and must exist
        unless it is inline YAML. Returns the inline documents (loaded strictly with ``strict``) and the
        file the value names, if any (added to the inputs)."""
        try:
            documents = load_all(value) if strict else list(yaml.safe_load_all(value))
        except RecursionError:
            raise RestrictionError(
                f"{self.display(origin)}: {where} (inline) nests too deep to be checked"
            ) from None
        except KeyProblem as exc:
            raise RestrictionError(f"{self.display(origin)}: {where} (inline): {exc.message}") from None
        except yaml.YAMLError:
            documents = []
        inline = any(isinstance(document, (dict, list)) for document in documents)
        path = self.locate(origin, where, value, base, required=not inline)
        if path is not None and is_dir(path):
            raise RestrictionError(f"{self.display(origin)}: {where} entry {shown(value)} is a directory")
        if path is not None:
            self.inputs.files.add(path)
        return ([document for document in documents if document is not None] if inline else []), path

    def check_path_entry(
        self, origin: Path, where: str, entry: dict[Any, Any], fields: frozenset[str], base: Path
    ) -> None:
        """A patch or replacement entry: exact keys, and its ``path`` inside the repository."""
        self.check_keys(origin, where, entry, fields, closed=False)
        path = self.string(origin, f"{where}.path", entry.get("path"))
        if path:
            self.file(origin, where.split("[", 1)[0], path, base)

    def check_replacements(self, origin: Path, where: str, value: object, base: Path) -> None:
        for index, entry in enumerate(self.mappings(origin, where, value)):
            self.check_path_entry(origin, f"{where}[{index}]", entry, REPLACEMENT_FIELDS, base)
