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

The checks are split by responsibility: ``paths`` (resolution inside the repository), ``yamlkeys`` (Go's
key folding, strict YAML), ``shapes`` (field shapes and keys), ``generators``, ``helm``, ``plugins``,
``fields`` (kustomize's field names), ``secretforms``, ``inputs`` (the policy and the result); this
module walks the graph of kustomizations and keeps the public API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reconciler.render.fields import HELM_FIELDS, KUSTOMIZATION_FIELDS, OPENAPI_FIELDS, PATCH_FIELDS
from reconciler.render.inputs import LoadPolicy, RenderInputs, RestrictionError, SecretSource
from reconciler.render.paths import KUSTOMIZATION_NAMES, find_kustomization, is_dir, kustomization_files
from reconciler.render.plugins import PluginChecks
from reconciler.render.secretforms import SHORTEST_SECRET_LINE
from reconciler.render.yamlkeys import go_fold

__all__ = [
    "KUSTOMIZATION_FIELDS",
    "KUSTOMIZATION_NAMES",
    "LoadPolicy",
    "RenderInputs",
    "RestrictionError",
    "SecretSource",
    "check",
    "find_kustomization",
    "go_fold",
    "kustomization_files",
]


class _Walker(PluginChecks):
    """Walks the graph of kustomizations from an environment's directory."""

    def __init__(self, root: Path, policy: LoadPolicy) -> None:
        super().__init__(root, policy)
        self.visited: set[Path] = set()

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

    def check_document(self, origin: Path, base: Path, doc: dict[Any, Any]) -> None:
        """One kustomization: its keys, then every field that reads files or other kustomizations."""
        self.check_keys(origin, "", doc, KUSTOMIZATION_FIELDS, closed=True)
        # generators first: a later refusal's message is scrubbed of the secret strings they hold
        for field_name in ("configMapGenerator", "secretGenerator"):
            for index, generator in enumerate(self.mappings(origin, field_name, doc.get(field_name))):
                self.check_generator(origin, f"{field_name}[{index}]", generator, base, field_name)
        for name in HELM_FIELDS:
            if doc.get(name) and not self.policy.allow_helm:
                raise RestrictionError(
                    f"{self.display(origin)}: {name} is refused: helm chart inflation is disabled "
                    "(allow it explicitly in the environment's render options)"
                )
        self.check_helm(origin, base, doc)
        self._check_resources(origin, base, doc)
        self._check_files(origin, base, doc)
        for index, value in enumerate(
            self.strings(origin, "patchesStrategicMerge", doc.get("patchesStrategicMerge"))
        ):
            self.inline_or_path(origin, f"patchesStrategicMerge[{index}]", value, base, strict=False)
        for field_name in ("patches", "patchesJson6902"):
            for index, entry in enumerate(self.mappings(origin, field_name, doc.get(field_name))):
                self.check_path_entry(origin, f"{field_name}[{index}]", entry, PATCH_FIELDS, base)
        self.check_replacements(origin, "replacements", doc.get("replacements"), base)
        for field_name in ("generators", "transformers", "validators"):
            for index, value in enumerate(self.strings(origin, field_name, doc.get(field_name))):
                self.check_plugin(origin, f"{field_name}[{index}]", value, base)

    def _check_resources(self, origin: Path, base: Path, doc: dict[Any, Any]) -> None:
        """resources, bases and components: kustomization directories (walked) or resource files."""
        for field_name in ("resources", "bases", "components"):
            for value in self.strings(origin, field_name, doc.get(field_name)):
                path = self.inside(origin, field_name, value, base)
                if path == Path():
                    continue
                if is_dir(path):
                    self.walk(path)
                else:
                    self.inputs.files.add(path)
                    self.inputs.resource_files.add(path)

    def _check_files(self, origin: Path, base: Path, doc: dict[Any, Any]) -> None:
        """crds, configurations and openapi: files read as they are."""
        for field_name in ("crds", "configurations"):
            for value in self.strings(origin, field_name, doc.get(field_name)):
                self.file(origin, field_name, value, base)
        openapi = self.mapping(origin, "openapi", doc.get("openapi"))
        self.check_keys(origin, "openapi", openapi, OPENAPI_FIELDS, closed=False)
        openapi_path = self.string(origin, "openapi.path", openapi.get("path"))
        if openapi_path:
            self.file(origin, "openapi", openapi_path, base)


def check(root: Path, environment: Path, policy: LoadPolicy) -> RenderInputs:
    """Check the kustomization graph rooted at ``environment`` and list the files it reads.

    A refusal's message never shows the strings of a secretGenerator found before it."""
    walker = _Walker(root, policy)
    try:
        start = walker.inside(environment, "environment path", str(environment), Path.cwd())
        walker.inputs.directories.clear()  # the environment's own parent is not read
        if not is_dir(start):
            raise RestrictionError(f"{walker.display(start)}: the environment path is not a directory")
        walker.walk(start)
    except RestrictionError as exc:
        message = str(exc)
        for value in sorted(walker.inputs.sensitive, key=len, reverse=True):
            if len(value) >= SHORTEST_SECRET_LINE:
                message = message.replace(value, "[redacted]")
        raise RestrictionError(message) from None
    return walker.inputs
