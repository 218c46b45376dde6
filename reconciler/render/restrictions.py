"""Static checks of a kustomization graph before kustomize runs: what a render may read.

A render may only read files inside the repository. Every path a kustomization names (resources,
components, patches, generators' files, replacements, crds, configurations, openapi, and the paths of
builtin plugin configurations listed under generators, transformers and validators) is resolved,
symlinks included, and refused when it leaves the repository root. Remote bases (and every other
reference kustomize would fetch or clone), helm chart inflation and KRM/exec function plugins are
refused unless the options allow them.

The walker must see exactly what kustomize sees. kustomize decodes kustomization files and builtin
plugin configurations through Go's encoding/json, which matches keys case-insensitively with Unicode
simple folding (``RESOURCES``, ``reſources`` and ``Resources`` all mean ``resources``) and lets the last
of two folding keys win. So a kustomization may only use the exact field names of kustomize v5 at its
top level; inside the structures the walker reads, a key that folds to a field name must be exactly it;
two keys that fold together, duplicate keys, YAML merge keys and non-string keys are refused. Errors
name the file, the field and the offending key or reference, never file contents.

The walk also returns every file the render reads, which is what the render cache hashes, and the
strings of every secretGenerator (literals, env-file lines, secret files' lines), which render errors
must never show (see ``kustomize.py``).
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# The json names of kustomize v5.8.1's types.Kustomization (api v0.21.1, api/types/kustomization.go,
# with the inlined TypeMeta): the only keys a kustomization file may use.
KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "openapi",
        "namePrefix",
        "nameSuffix",
        "namespace",
        "commonLabels",
        "labels",
        "commonAnnotations",
        "patchesStrategicMerge",
        "patchesJson6902",
        "patches",
        "images",
        "imageTags",
        "replacements",
        "replicas",
        "vars",
        "sortOptions",
        "resources",
        "components",
        "crds",
        "bases",
        "configMapGenerator",
        "secretGenerator",
        "helmGlobals",
        "helmCharts",
        "helmChartInflationGenerator",
        "generatorOptions",
        "configurations",
        "generators",
        "transformers",
        "validators",
        "buildMetadata",
    }
)
# The fields of the structures the walker reads paths from (api/types: Patch, ReplacementField,
# GeneratorArgs with KvPairSources, SecretArgs, HelmGlobals, HelmChart, HelmChartArgs).
_PATCH_FIELDS = frozenset({"path", "patch", "target", "options"})
_JSON6902_PLUGIN_FIELDS = frozenset({"path", "jsonOp", "target"})
_REPLACEMENT_FIELDS = frozenset({"path", "source", "targets", "sourceValue"})
_GENERATOR_FIELDS = frozenset(
    {"namespace", "name", "behavior", "literals", "files", "envs", "env", "options"}
)
_SECRET_GENERATOR_FIELDS = _GENERATOR_FIELDS | {"type"}
_HELM_GLOBALS_FIELDS = frozenset({"chartHome", "configHome"})
_HELM_CHART_FIELDS = frozenset(
    {
        "name",
        "version",
        "repo",
        "releaseName",
        "namespace",
        "additionalValuesFiles",
        "valuesFile",
        "valuesInline",
        "valuesMerge",
        "includeCRDs",
        "skipHooks",
        "apiVersions",
        "kubeVersion",
        "nameTemplate",
        "skipTests",
        "debug",
        "devel",
    }
)
_HELM_ARGS_FIELDS = frozenset(
    {
        "chartName",
        "chartVersion",
        "chartRepoUrl",
        "chartHome",
        "chartRepoName",
        "helmBin",
        "helmHome",
        "values",
        "valuesLocal",
        "valuesMerge",
        "releaseName",
        "releaseNamespace",
        "extraArgs",
    }
)
# openapi is a plain map in kustomize (only the exact key "path" is read); a folding variant is refused
# all the same, so that no spelling of it is ever ambiguous.
_OPENAPI_FIELDS = frozenset({"path", "version"})
# Builtin plugins (apiVersion: builtin) that read files, and their configuration fields
# (api/internal/builtins/*.go). Other builtins read no files; their keys are still checked for collisions.
_BUILTIN_FIELDS: dict[str, frozenset[str]] = {
    "PatchTransformer": _PATCH_FIELDS,
    "PatchStrategicMergeTransformer": frozenset({"paths", "patches"}),
    "PatchJson6902Transformer": _JSON6902_PLUGIN_FIELDS,
    "ReplacementTransformer": frozenset({"replacements"}),
    "ConfigMapGenerator": _GENERATOR_FIELDS | {"metadata"},
    "SecretGenerator": _SECRET_GENERATOR_FIELDS | {"metadata"},
    "ValueAddTransformer": frozenset({"value", "targets", "targetFilePath"}),
    "HelmChartInflationGenerator": _HELM_GLOBALS_FIELDS | _HELM_CHART_FIELDS,
}
_HELM_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[a-z][a-z0-9-]*@|[a-z0-9.-]+\.[a-z]{2,}/)", re.IGNORECASE)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHORTEST_SECRET_LINE = 4  # lines of secret files at least this long are redacted from render errors


class RestrictionError(ValueError):
    """The kustomization asks for something a render may not do."""


@dataclass(frozen=True)
class LoadPolicy:
    """What a render may do beyond reading local files."""

    allow_remote_bases: bool = False
    allow_helm: bool = False
    allow_plugins: bool = False


@dataclass(frozen=True)
class SecretSource:
    """One secretGenerator of the graph: where it is written, and the strings a render error must not
    show (``entries``: whole literals and env-file lines; ``values``: those plus their values, encodings
    and secret files' lines). Never logged: its repr shows neither set."""

    file: str
    name: str
    entries: frozenset[str] = field(repr=False)
    values: frozenset[str] = field(repr=False)


@dataclass
class RenderInputs:
    """Every file a render reads (resolved paths), for hashing, and what its errors must not show."""

    files: set[Path] = field(default_factory=set)
    resource_files: set[Path] = field(default_factory=set)
    # every directory the walk looked into, as written and as resolved: a change to any path directly in
    # one of them (an edited, added, removed or re-pointed file) may change the render; nothing else can
    directories: set[Path] = field(default_factory=set)
    # the secretGenerators of the graph; ``sensitive`` is the union of their values (never logged)
    secrets: list[SecretSource] = field(default_factory=list, repr=False)
    sensitive: set[str] = field(default_factory=set, repr=False)


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


def kustomization_files(directory: Path) -> list[Path]:
    """Every kustomization file of a directory, in kustomize's order of names."""
    return [directory / name for name in KUSTOMIZATION_NAMES if (directory / name).is_file()]


def find_kustomization(directory: Path) -> Path | None:
    """The kustomization file of a directory, if it has one (two of them are refused, as kustomize does)."""
    found = kustomization_files(directory)
    if len(found) > 1:
        raise RestrictionError(
            f"{directory}: has both {' and '.join(path.name for path in found)}; kustomize refuses a "
            "directory with more than one kustomization file: keep one"
        )
    return found[0] if found else None


def _looks_remote(value: str) -> bool:
    """Whether kustomize could fetch ``value`` over the network or clone it with git.

    A superset of kustomize's own tests (an http(s) URL for a file; for a base, a URL with any scheme,
    ``git::`` forced-protocol prefixes, ``user@host:`` SCP style, or a github.com path)."""
    lowered = value.lower()
    return (
        bool(_REMOTE.match(value))
        or lowered.startswith(("git::", "github.com/", "github.com:"))
        or "?ref=" in value
        or "?version=" in value
    )


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class _KeyProblem(yaml.YAMLError):
    """A key the walker refuses, found while loading YAML (duplicates, merge keys)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made to agree with kustomize's decoders where they would differ.

    Duplicate keys and YAML merge keys are refused rather than resolved, and timestamps stay strings
    (Go's YAML decoders keep them as text, and so must the paths the walker checks)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise _KeyProblem(
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
                raise _KeyProblem(
                    f"the key {_shown(key)} appears twice (lines {seen[marker]} and {line}); "
                    "kustomize would silently use one of them: keep one"
                )
            seen[marker] = line
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass


def _secret_line_forms(raw: bytes) -> tuple[set[str], set[str]]:
    """The forms in which kustomize may print one env-file line: as text, its value, and Go's %v of its
    bytes (kustomize prints an invalid line that way). Returns (entries, values)."""
    text = raw.decode("utf-8", errors="replace")
    entries = {text, text.strip(), "[" + " ".join(str(byte) for byte in raw) + "]"}
    values = set(entries)
    if "=" in text:
        value = text.split("=", 1)[1]
        values.update({value, value.strip(), _base64(value.encode("utf-8", errors="replace"))})
    return entries, values


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _literal_forms(literal: str) -> tuple[set[str], set[str]]:
    """A secretGenerator literal as kustomize may print it: whole, its value, unquoted, encoded."""
    entries = {literal}
    values = {literal, json.dumps(literal)[1:-1]}
    value = literal.split("=", 1)[1] if "=" in literal else literal
    unquoted = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value
    for form in (value, unquoted):
        values.update({form, json.dumps(form)[1:-1], _base64(form.encode("utf-8"))})
    return entries, values


class _Walker:
    def __init__(self, root: Path, policy: LoadPolicy) -> None:
        self.root = root.resolve()
        self.policy = policy
        self.inputs = RenderInputs()
        self.visited: set[Path] = set()

    def display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # -- paths ---------------------------------------------------------------------------------------

    def locate(self, origin: Path, field_name: str, value: str, base: Path, *, required: bool) -> Path | None:
        """Resolve ``value`` relative to ``base`` and insist it stays inside the repository.

        Returns None for an allowed remote reference, or (unless ``required``) for a path that does not
        exist; a path that leaves the repository is refused either way."""
        where = f"{self.display(origin)}: {field_name} entry {_shown(value)}"
        if _looks_remote(value):
            if self.policy.allow_remote_bases:
                return None
            raise RestrictionError(
                f"{where} is a remote reference; remote bases are refused "
                "(allow them explicitly in the environment's render options)"
            )
        if "\0" in value:
            raise RestrictionError(f"{where} contains a NUL character")
        candidate = base / value
        try:
            resolved = candidate.resolve()
        except (RuntimeError, OSError):
            raise RestrictionError(f"{where} cannot be resolved (a symlink loop?)") from None
        lexical = Path(os.path.normpath(candidate.absolute()))
        if not _is_dir(resolved):
            # a file is read from its directory
            self.inputs.directories.add(lexical.parent)
            self.inputs.directories.add(resolved.parent)
        for step in (lexical, *lexical.parents):
            if step == self.root or self.root not in step.parents:
                break
            if _is_symlink(step):  # a symlink on the way can be re-pointed in its own directory
                self.inputs.directories.add(step.parent)
        if resolved != self.root and self.root not in resolved.parents:
            escapes_lexically = lexical != self.root and self.root not in lexical.parents
            how = "" if escapes_lexically else "through a symlink "
            raise RestrictionError(
                f"{where} points {how}outside the repository; renders may only read files inside it"
            )
        if not _exists(resolved):
            if required:
                raise RestrictionError(f"{where} does not exist in the repository")
            return None
        return resolved

    def inside(self, origin: Path, field_name: str, value: str, base: Path) -> Path:
        """Resolve ``value`` relative to ``base`` and insist it stays inside the repository and exists.

        An allowed remote reference resolves to ``Path()``."""
        path = self.locate(origin, field_name, value, base, required=True)
        return Path() if path is None else path

    def file(self, origin: Path, field_name: str, value: str, base: Path) -> Path:
        path = self.inside(origin, field_name, value, base)
        if path != Path() and _is_file(path):
            self.inputs.files.add(path)
        return path

    # -- shapes and keys -----------------------------------------------------------------------------

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
                    f"{prefix}key {_shown(key)} is not text; kustomize would read it as text, perhaps as "
                    "another field: write it as a plain string"
                )
            fold = go_fold(key)
            if fold in folded:
                raise RestrictionError(
                    f"{prefix}keys {_shown(folded[fold])} and {_shown(key)} name the same field for "
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
                    f"{prefix}key {_shown(key)} is read by kustomize as {field_name!r} (it matches keys "
                    f"case-insensitively, Unicode folding included): write it exactly as {field_name!r}"
                )
            if closed:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RestrictionError(
                    f"{prefix}key {_shown(key)} is not a kustomization field of kustomize v5{hint}; "
                    "remove it or correct its spelling"
                )

    # -- kustomizations ------------------------------------------------------------------------------

    def walk(self, directory: Path) -> None:
        self.inputs.directories.add(Path(os.path.normpath(directory.absolute())))
        directory = directory.resolve()
        self.inputs.directories.add(directory)
        if directory in self.visited:
            return
        self.visited.add(directory)
        found = kustomization_files(directory)
        if len(found) > 1:
            raise RestrictionError(
                f"{self.display(directory)}: has both {' and '.join(path.name for path in found)}; kustomize "
                "refuses a directory with more than one kustomization file: keep one"
            )
        kustomization = found[0] if found else None
        if kustomization is None:
            raise RestrictionError(f"{self.display(directory)}: no kustomization.yaml in this directory")
        if kustomization.resolve() != self.root and self.root not in kustomization.resolve().parents:
            raise RestrictionError(f"{self.display(kustomization)}: points outside the repository")
        self.inputs.files.add(kustomization.resolve())
        documents = [document for document in self.load(kustomization, kustomization) if document is not None]
        if len(documents) > 1:
            raise RestrictionError(f"{self.display(kustomization)}: holds more than one YAML document")
        document = documents[0] if documents else {}
        if not isinstance(document, dict):
            raise RestrictionError(f"{self.display(kustomization)}: expected a mapping")
        self.check_document(kustomization, directory, document)

    def load(self, path: Path, shown: Path) -> list[Any]:
        """The YAML documents of a file the walker interprets, loaded strictly."""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise RestrictionError(f"{self.display(shown)}: is not UTF-8 text") from None
        try:
            return _load_all(text)
        except RecursionError:
            raise RestrictionError(f"{self.display(shown)}: nests too deep to be checked") from None
        except _KeyProblem as exc:
            raise RestrictionError(f"{self.display(shown)}: {exc.message}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RestrictionError(f"{self.display(shown)}: not valid YAML{where}") from None

    def check_document(self, origin: Path, base: Path, doc: dict[Any, Any]) -> None:
        self.check_keys(origin, "", doc, KUSTOMIZATION_FIELDS, closed=True)
        # generators first: a later refusal's message is scrubbed of the secret strings they hold
        for field_name in ("configMapGenerator", "secretGenerator"):
            for index, generator in enumerate(self.mappings(origin, field_name, doc.get(field_name))):
                self.check_generator(origin, f"{field_name}[{index}]", generator, base, field_name)
        for name in _HELM_FIELDS:
            if doc.get(name) and not self.policy.allow_helm:
                raise RestrictionError(
                    f"{self.display(origin)}: {name} is refused: helm chart inflation is disabled "
                    "(allow it explicitly in the environment's render options)"
                )
        self.check_helm(origin, base, doc)
        for field_name in ("resources", "bases", "components"):
            for value in self.strings(origin, field_name, doc.get(field_name)):
                path = self.inside(origin, field_name, value, base)
                if path == Path():
                    continue
                if _is_dir(path):
                    self.walk(path)
                else:
                    self.inputs.files.add(path)
                    self.inputs.resource_files.add(path)
        for field_name in ("crds", "configurations"):
            for value in self.strings(origin, field_name, doc.get(field_name)):
                self.file(origin, field_name, value, base)
        openapi = self.mapping(origin, "openapi", doc.get("openapi"))
        self.check_keys(origin, "openapi", openapi, _OPENAPI_FIELDS, closed=False)
        openapi_path = self.string(origin, "openapi.path", openapi.get("path"))
        if openapi_path:
            self.file(origin, "openapi", openapi_path, base)
        for index, value in enumerate(
            self.strings(origin, "patchesStrategicMerge", doc.get("patchesStrategicMerge"))
        ):
            self.inline_or_path(origin, f"patchesStrategicMerge[{index}]", value, base, strict=False)
        for field_name in ("patches", "patchesJson6902"):
            for index, entry in enumerate(self.mappings(origin, field_name, doc.get(field_name))):
                self.check_path_entry(origin, f"{field_name}[{index}]", entry, _PATCH_FIELDS, base)
        self.check_replacements(origin, "replacements", doc.get("replacements"), base)
        for field_name in ("generators", "transformers", "validators"):
            for index, value in enumerate(self.strings(origin, field_name, doc.get(field_name))):
                self.check_plugin(origin, f"{field_name}[{index}]", value, base)

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
            self.check_path_entry(origin, f"{where}[{index}]", entry, _REPLACEMENT_FIELDS, base)

    def check_generator(
        self, origin: Path, where: str, generator: Mapping[Any, Any], base: Path, kind: str, name: str = ""
    ) -> None:
        """A configMapGenerator or secretGenerator (or their builtin plugins): exact keys, files inside
        the repository; a secret generator's strings are collected for the scrubbing of render errors."""
        secret = kind in ("secretGenerator", "SecretGenerator")
        fields = _SECRET_GENERATOR_FIELDS if secret else _GENERATOR_FIELDS
        if kind in _BUILTIN_FIELDS:
            fields = _BUILTIN_FIELDS[kind]
        self.check_keys(origin, where, generator, fields, closed=False)
        entries: set[str] = set()
        values: set[str] = set()
        for literal in self.strings(origin, f"{where}.literals", generator.get("literals")):
            more_entries, more_values = _literal_forms(literal)
            entries |= more_entries
            values |= more_values
        env_files: list[Path] = []
        for value in self.strings(origin, f"{where}.files", generator.get("files")):
            separators = value.count("=")
            if separators > 1 or value.startswith("=") or value.endswith("="):
                raise RestrictionError(
                    f"{self.display(origin)}: {where}.files entry {_shown(value)} must be PATH or KEY=PATH"
                )
            path = self.file(origin, kind, value.split("=", 1)[-1], base)
            if secret and path != Path() and _is_file(path):
                content = path.read_bytes()
                decoded = content.decode("utf-8", errors="replace")
                values.update({_base64(content), decoded.strip()})
                for text in decoded.splitlines():
                    if len(text.strip()) >= _SHORTEST_SECRET_LINE:
                        values.update({text, text.strip()})
        env = self.string(origin, f"{where}.env", generator.get("env"))
        for value in [*self.strings(origin, f"{where}.envs", generator.get("envs")), *([env] if env else [])]:
            path = self.file(origin, kind, value, base)
            if path != Path() and _is_file(path):
                env_files.append(path)
        if not secret:
            return
        for path in env_files:
            for chunk in path.read_bytes().split(b"\n"):
                line = chunk.removesuffix(b"\r")
                if line.strip():
                    more_entries, more_values = _secret_line_forms(line)
                    entries |= more_entries
                    values |= more_values
        entries = {value for value in entries if value.strip()}
        values = {value for value in values if value.strip()}
        generator_name = generator.get("name") or name
        self.inputs.secrets.append(
            SecretSource(
                self.display(origin),
                generator_name if isinstance(generator_name, str) else "",
                frozenset(entries),
                frozenset(values),
            )
        )
        self.inputs.sensitive |= values

    def check_helm(self, origin: Path, base: Path, doc: Mapping[Any, Any], where: str = "") -> None:
        """Helm fields (only reached when helm is allowed, or when they are empty): exact keys, and the
        chart home, values files and helm configuration directory inside the repository."""
        prefix = f"{where}." if where else ""
        globals_list: Sequence[Mapping[Any, Any]] = [doc]
        charts: Sequence[Mapping[Any, Any]] = [doc]
        legacy: list[dict[Any, Any]] = []
        if not where:  # else a HelmChartInflationGenerator plugin configuration: globals and one chart
            top = self.mapping(origin, "helmGlobals", doc.get("helmGlobals"))
            self.check_keys(origin, "helmGlobals", top, _HELM_GLOBALS_FIELDS, closed=False)
            globals_list = [top]
            charts = self.mappings(origin, "helmCharts", doc.get("helmCharts"))
            legacy = self.mappings(
                origin, "helmChartInflationGenerator", doc.get("helmChartInflationGenerator")
            )
        for helm_globals in globals_list:
            for name in ("chartHome", "configHome"):
                value = self.string(origin, f"{prefix}{name}", helm_globals.get(name))
                if value:
                    self.locate(origin, f"{prefix}{name}", value, base, required=False)
        for index, chart in enumerate(charts):
            chart_where = where or f"helmCharts[{index}]"
            if not where:
                self.check_keys(origin, chart_where, chart, _HELM_CHART_FIELDS, closed=False)
            self.check_chart_name(origin, chart_where, chart.get("name"))
            values_file = self.string(origin, f"{chart_where}.valuesFile", chart.get("valuesFile"))
            for value in [
                *([values_file] if values_file else []),
                *self.strings(
                    origin, f"{chart_where}.additionalValuesFiles", chart.get("additionalValuesFiles")
                ),
            ]:
                self.file(origin, f"{chart_where} values file", value, base)
        for index, args in enumerate(legacy):
            args_where = f"helmChartInflationGenerator[{index}]"
            self.check_keys(origin, args_where, args, _HELM_ARGS_FIELDS, closed=False)
            self.check_chart_name(origin, args_where, args.get("chartName"))
            for name in ("chartHome", "helmHome"):
                value = self.string(origin, f"{args_where}.{name}", args.get(name))
                if value:
                    self.locate(origin, f"{args_where}.{name}", value, base, required=False)
            values_file = self.string(origin, f"{args_where}.values", args.get("values"))
            if values_file:
                self.file(origin, f"{args_where}.values", values_file, base)

    def check_chart_name(self, origin: Path, where: str, name: object) -> None:
        text = self.string(origin, f"{where}.name", name)
        if text and ("/" in text or "\\" in text or text in (".", "..")):
            raise RestrictionError(
                f"{self.display(origin)}: {where}: chart name {_shown(text)} is a path; a chart name may not "
                "name a directory elsewhere"
            )

    def inline_or_path(
        self, origin: Path, where: str, value: str, base: Path, *, strict: bool
    ) -> tuple[list[Any], Path | None]:
        """An entry kustomize reads as inline YAML when it parses as such, else as a file path.

        Both readings are checked: the value as a path may never leave the repository, and must exist
        unless it is inline YAML. Returns the inline documents (loaded strictly with ``strict``) and the
        file the value names, if any (added to the inputs)."""
        try:
            documents = _load_all(value) if strict else list(yaml.safe_load_all(value))
        except RecursionError:
            raise RestrictionError(
                f"{self.display(origin)}: {where} (inline) nests too deep to be checked"
            ) from None
        except _KeyProblem as exc:
            raise RestrictionError(f"{self.display(origin)}: {where} (inline): {exc.message}") from None
        except yaml.YAMLError:
            documents = []
        inline = any(isinstance(document, (dict, list)) for document in documents)
        path = self.locate(origin, where, value, base, required=not inline)
        if path is not None and _is_dir(path):
            raise RestrictionError(f"{self.display(origin)}: {where} entry {_shown(value)} is a directory")
        if path is not None:
            self.inputs.files.add(path)
        return ([document for document in documents if document is not None] if inline else []), path

    # -- plugins -------------------------------------------------------------------------------------

    def check_plugin(self, origin: Path, where: str, value: str, base: Path) -> None:
        """A generators/transformers/validators entry: inline configuration, a file of configurations,
        or (refused) a kustomization directory whose output would be the configurations."""
        candidate = (
            self.locate(origin, where, value, base, required=False) if not _looks_remote(value) else None
        )
        if candidate is not None and _is_dir(candidate):
            raise RestrictionError(
                f"{self.display(origin)}: {where} entry {_shown(value)} is a directory: plugin "
                "configurations built by a kustomization cannot be checked before the render; list the "
                "configuration files (or write them inline) instead"
            )
        inline, path = self.inline_or_path(origin, where, value, base, strict=True)
        for document in inline:
            self.check_plugin_config(origin, f"{where} (inline)", document, base)
        if path is not None:
            for document in self.load(path, path):
                self.check_plugin_config(origin, f"{where} ({self.display(path)})", document, base)

    def check_plugin_config(
        self, origin: Path, where: str, document: object, base: Path, depth: int = 0
    ) -> None:
        if isinstance(document, list):  # kustomize reads no such list, but check what it holds anyway
            for item in document:
                self.check_plugin_config(origin, where, item, base, depth + 1)
            return
        if depth > 16:
            raise RestrictionError(
                f"{self.display(origin)}: {where}: lists of plugin configurations nest too deep"
            )
        if not isinstance(document, dict):
            return
        kind = document.get("kind")
        items = document.get("items")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            for item in items:  # kustomize inlines the items of a FooList
                self.check_plugin_config(origin, where, item, base, depth + 1)
            return
        metadata = document.get("metadata")
        annotations = (metadata.get("annotations") if isinstance(metadata, dict) else None) or {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        label = f"{where} {kind if isinstance(kind, str) else '?'}" + (
            f" {name!r}" if isinstance(name, str) else ""
        )
        if not self.policy.allow_plugins:
            if isinstance(annotations, dict) and any(key in annotations for key in _FUNCTION_ANNOTATIONS):
                raise RestrictionError(
                    f"{self.display(origin)}: {label} is a KRM/exec function plugin; plugins are refused "
                    "(allow them explicitly in the render options)"
                )
            if not _is_builtin(document):
                raise RestrictionError(
                    f"{self.display(origin)}: {label} is not a builtin plugin (apiVersion: builtin); "
                    "external plugins are refused (allow them explicitly in the render options)"
                )
        if not _is_builtin(document) or not isinstance(kind, str):
            return
        fields = _BUILTIN_FIELDS.get(kind, frozenset())
        if kind in ("ConfigMapGenerator", "SecretGenerator"):
            self.check_generator(origin, label, document, base, kind, name if isinstance(name, str) else "")
            return
        self.check_keys(origin, label, document, fields, closed=False)
        if kind in ("PatchTransformer", "PatchJson6902Transformer"):
            path = self.string(origin, f"{label}.path", document.get("path"))
            if path:
                self.file(origin, f"{label}.path", path, base)
        elif kind == "PatchStrategicMergeTransformer":
            for index, value in enumerate(self.strings(origin, f"{label}.paths", document.get("paths"))):
                self.inline_or_path(origin, f"{label}.paths[{index}]", value, base, strict=False)
        elif kind == "ReplacementTransformer":
            self.check_replacements(origin, f"{label}.replacements", document.get("replacements"), base)
        elif kind == "ValueAddTransformer":
            path = self.string(origin, f"{label}.targetFilePath", document.get("targetFilePath"))
            if path:
                self.file(origin, f"{label}.targetFilePath", path, base)
        elif kind == "HelmChartInflationGenerator":
            if not self.policy.allow_helm:
                raise RestrictionError(
                    f"{self.display(origin)}: {label} is refused: helm chart inflation is disabled "
                    "(allow it explicitly in the environment's render options)"
                )
            self.check_helm(origin, base, document, where=label)


def _is_builtin(document: Mapping[Any, Any]) -> bool:
    """kustomize's test: the apiVersion's group is empty and its version is ``builtin``."""
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str):
        return False
    group, _, version = api_version.partition("/") if "/" in api_version else ("", "", api_version)
    return group == "" and version == "builtin"


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_symlink(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def check(root: Path, environment: Path, policy: LoadPolicy) -> RenderInputs:
    """Check the kustomization graph rooted at ``environment`` and list the files it reads.

    A refusal's message never shows the strings of a secretGenerator found before it."""
    walker = _Walker(root, policy)
    try:
        start = walker.inside(environment, "environment path", str(environment), Path.cwd())
        walker.inputs.directories.clear()  # the environment's own parent is not read
        if not _is_dir(start):
            raise RestrictionError(f"{walker.display(start)}: the environment path is not a directory")
        walker.walk(start)
    except RestrictionError as exc:
        message = str(exc)
        for value in sorted(walker.inputs.sensitive, key=len, reverse=True):
            if len(value) >= _SHORTEST_SECRET_LINE:
                message = message.replace(value, "[redacted]")
        raise RestrictionError(message) from None
    return walker.inputs
