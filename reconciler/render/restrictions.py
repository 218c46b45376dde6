"""Static checks of a kustomization graph before kustomize runs: what a render may read.

A render may only read files inside the repository. Every path a kustomization names (resources,
components, patches, generators' files, replacements, crds, configurations, openapi) is resolved,
symlinks included, and refused when it leaves the repository root. Remote bases, helm chart inflation
and KRM/exec function plugins are refused unless the options allow them. Errors name the kustomization
file, the field and the offending reference, never file contents.

The walk also returns every file the render reads, which is what the render cache hashes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|[a-z0-9.-]+\.[a-z]{2,}/)", re.IGNORECASE)
_HELM_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")


class RestrictionError(ValueError):
    """The kustomization asks for something a render may not do."""


@dataclass(frozen=True)
class LoadPolicy:
    """What a render may do beyond reading local files."""

    allow_remote_bases: bool = False
    allow_helm: bool = False
    allow_plugins: bool = False


@dataclass
class RenderInputs:
    """Every file a render reads (resolved paths), for hashing."""

    files: set[Path] = field(default_factory=set)
    resource_files: set[Path] = field(default_factory=set)
    # every directory the walk looked into, as written and as resolved: a change to any path directly in
    # one of them (an edited, added, removed or re-pointed file) may change the render; nothing else can
    directories: set[Path] = field(default_factory=set)


def find_kustomization(directory: Path) -> Path | None:
    """The kustomization file of a directory, if it has one."""
    for name in KUSTOMIZATION_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _looks_remote(value: str) -> bool:
    return bool(_REMOTE.match(value)) or "?ref=" in value or value.startswith("github.com/")


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

    def inside(self, origin: Path, field_name: str, value: str, base: Path) -> Path:
        """Resolve ``value`` relative to ``base`` and insist it stays inside the repository."""
        if _looks_remote(value):
            if self.policy.allow_remote_bases:
                return Path()
            raise RestrictionError(
                f"{self.display(origin)}: {field_name} entry {value!r} is a remote reference; remote bases "
                "are refused (allow them explicitly in the environment's render options)"
            )
        candidate = base / value
        resolved = candidate.resolve()
        lexical = Path(os.path.normpath(candidate.absolute()))
        if not resolved.is_dir():
            # a file is read from its directory
            self.inputs.directories.add(lexical.parent)
            self.inputs.directories.add(resolved.parent)
        for step in (lexical, *lexical.parents):
            if step == self.root or self.root not in step.parents:
                break
            if step.is_symlink():  # a symlink on the way can be re-pointed in its own directory
                self.inputs.directories.add(step.parent)
        if resolved != self.root and self.root not in resolved.parents:
            escapes_lexically = lexical != self.root and self.root not in lexical.parents
            how = "" if escapes_lexically else "through a symlink "
            raise RestrictionError(
                f"{self.display(origin)}: {field_name} entry {value!r} points {how}outside the repository; "
                "renders may only read files inside it"
            )
        if not resolved.exists():
            raise RestrictionError(
                f"{self.display(origin)}: {field_name} entry {value!r} does not exist in the repository"
            )
        return resolved

    def file(self, origin: Path, field_name: str, value: str, base: Path) -> Path:
        path = self.inside(origin, field_name, value, base)
        if path != Path() and path.is_file():
            self.inputs.files.add(path)
        return path

    def walk(self, directory: Path) -> None:
        self.inputs.directories.add(Path(os.path.normpath(directory.absolute())))
        directory = directory.resolve()
        self.inputs.directories.add(directory)
        if directory in self.visited:
            return
        self.visited.add(directory)
        kustomization = find_kustomization(directory)
        if kustomization is None:
            raise RestrictionError(f"{self.display(directory)}: no kustomization.yaml in this directory")
        if kustomization.resolve() != self.root and self.root not in kustomization.resolve().parents:
            raise RestrictionError(f"{self.display(kustomization)}: points outside the repository")
        self.inputs.files.add(kustomization.resolve())
        try:
            document = yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RestrictionError(f"{self.display(kustomization)}: not valid YAML{where}") from None
        if not isinstance(document, dict):
            raise RestrictionError(f"{self.display(kustomization)}: expected a mapping")
        self.check_document(kustomization, directory, document)

    def check_document(self, origin: Path, base: Path, doc: dict[str, Any]) -> None:
        for name in _HELM_FIELDS:
            if doc.get(name) and not self.policy.allow_helm:
                raise RestrictionError(
                    f"{self.display(origin)}: {name} is refused: helm chart inflation is disabled "
                    "(allow it explicitly in the environment's render options)"
                )
        for field_name in ("resources", "bases", "components"):
            for value in doc.get(field_name) or []:
                path = self.inside(origin, field_name, str(value), base)
                if path == Path():
                    continue
                if path.is_dir():
                    self.walk(path)
                else:
                    self.inputs.files.add(path)
                    self.inputs.resource_files.add(path)
        for field_name in ("crds", "configurations"):
            for value in doc.get(field_name) or []:
                self.file(origin, field_name, str(value), base)
        openapi = doc.get("openapi")
        if isinstance(openapi, dict) and openapi.get("path"):
            self.file(origin, "openapi", str(openapi["path"]), base)
        for value in doc.get("patchesStrategicMerge") or []:
            text = str(value)
            if "\n" not in text and not text.lstrip().startswith(("apiVersion", "{")):
                self.file(origin, "patchesStrategicMerge", text, base)
        for field_name in ("patches", "patchesJson6902", "replacements"):
            for entry in doc.get(field_name) or []:
                if isinstance(entry, dict) and entry.get("path"):
                    self.file(origin, field_name, str(entry["path"]), base)
        for field_name in ("configMapGenerator", "secretGenerator"):
            for generator in doc.get(field_name) or []:
                if not isinstance(generator, dict):
                    continue
                for value in generator.get("files") or []:
                    source = str(value).split("=", 1)[-1]
                    self.file(origin, field_name, source, base)
                for value in generator.get("envs") or []:
                    self.file(origin, field_name, str(value), base)
                if generator.get("env"):
                    self.file(origin, field_name, str(generator["env"]), base)
        for field_name in ("generators", "transformers", "validators"):
            for value in doc.get(field_name) or []:
                self.check_plugin(origin, field_name, str(value), base)

    def check_plugin(self, origin: Path, field_name: str, value: str, base: Path) -> None:
        if "\n" in value or value.lstrip().startswith(("apiVersion", "{")):
            documents = list(yaml.safe_load_all(value))
        else:
            path = self.inside(origin, field_name, value, base)
            if path == Path():
                return
            if path.is_dir():
                self.walk(path)
                return
            self.inputs.files.add(path)
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        for document in documents:
            if not isinstance(document, dict):
                continue
            annotations = ((document.get("metadata") or {}).get("annotations")) or {}
            if any(name in annotations for name in _FUNCTION_ANNOTATIONS) and not self.policy.allow_plugins:
                raise RestrictionError(
                    f"{self.display(origin)}: {field_name} entry {document.get('kind', '?')} is a KRM/exec "
                    "function plugin; plugins are refused (allow them explicitly in the render options)"
                )


def check(root: Path, environment: Path, policy: LoadPolicy) -> RenderInputs:
    """Check the kustomization graph rooted at ``environment`` and list the files it reads."""
    walker = _Walker(root, policy)
    start = walker.inside(environment, "environment path", str(environment), Path.cwd())
    walker.inputs.directories.clear()  # the environment's own parent is not read
    if not start.is_dir():
        raise RestrictionError(f"{walker.display(start)}: the environment path is not a directory")
    walker.walk(start)
    return walker.inputs
