"""The generators, transformers and validators entries of a kustomization: inline plugin
configurations or files of them (never a kustomization directory, whose output cannot be checked
before the render); KRM/exec function and external plugins refused unless allowed; the builtin plugins
that read files checked like the kustomization fields they mirror."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.render.fields import BUILTIN_FIELDS, FUNCTION_ANNOTATIONS
from reconciler.render.generators import GeneratorChecks
from reconciler.render.helm import HelmChecks
from reconciler.render.inputs import RestrictionError
from reconciler.render.paths import is_dir, looks_remote
from reconciler.render.yamlkeys import shown


def is_builtin(document: Mapping[Any, Any]) -> bool:
    """kustomize's test: the apiVersion's group is empty and its version is ``builtin``."""
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str):
        return False
    group, _, version = api_version.partition("/") if "/" in api_version else ("", "", api_version)
    return group == "" and version == "builtin"


class PluginChecks(GeneratorChecks, HelmChecks):
    """The checks of plugin entries and configurations."""

    def check_plugin(self, origin: Path, where: str, value: str, base: Path) -> None:
        """A generators/transformers/validators entry: inline configuration, a file of configurations,
        or (refused) a kustomization directory whose output would be the configurations."""
        candidate = (
            self.locate(origin, where, value, base, required=False) if not looks_remote(value) else None
        )
        if candidate is not None and is_dir(candidate):
            raise RestrictionError(
                f"{self.display(origin)}: {where} entry {shown(value)} is a directory: plugin "
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
        """One plugin configuration (or a list of them, or a FooList's items)."""
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
            self._refuse_plugin(origin, label, document, annotations)
        if not is_builtin(document) or not isinstance(kind, str):
            return
        self.check_builtin(origin, label, document, base, kind, name if isinstance(name, str) else "")

    def _refuse_plugin(
        self, origin: Path, label: str, document: Mapping[Any, Any], annotations: object
    ) -> None:
        """Refuse a function plugin or an external plugin (plugins are not allowed)."""
        if isinstance(annotations, dict) and any(key in annotations for key in FUNCTION_ANNOTATIONS):
            raise RestrictionError(
                f"{self.display(origin)}: {label} is a KRM/exec function plugin; plugins are refused "
                "(allow them explicitly in the render options)"
            )
        if not is_builtin(document):
            raise RestrictionError(
                f"{self.display(origin)}: {label} is not a builtin plugin (apiVersion: builtin); "
                "external plugins are refused (allow them explicitly in the render options)"
            )

    def check_builtin(
        self, origin: Path, label: str, document: Mapping[Any, Any], base: Path, kind: str, name: str
    ) -> None:
        """A builtin plugin's configuration: exact keys, and the files it reads inside the repository."""
        fields = BUILTIN_FIELDS.get(kind, frozenset())
        if kind in ("ConfigMapGenerator", "SecretGenerator"):
            self.check_generator(origin, label, document, base, kind, name)
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
