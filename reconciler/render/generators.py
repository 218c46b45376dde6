"""configMapGenerator and secretGenerator entries (and their builtin plugins): exact keys, every file
they read inside the repository, and a secret generator's strings collected so that render errors can
be scrubbed of them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.render.fields import BUILTIN_FIELDS, GENERATOR_FIELDS, SECRET_GENERATOR_FIELDS
from reconciler.render.inputs import RestrictionError, SecretSource
from reconciler.render.paths import is_file
from reconciler.render.secretforms import SHORTEST_SECRET_LINE, b64text, literal_forms, secret_line_forms
from reconciler.render.shapes import ShapeReader
from reconciler.render.yamlkeys import shown


class GeneratorChecks(ShapeReader):
    """The checks of generator entries."""

    def check_generator(
        self, origin: Path, where: str, generator: Mapping[Any, Any], base: Path, kind: str, name: str = ""
    ) -> None:
        """A configMapGenerator or secretGenerator (or their builtin plugins): exact keys, files inside
        the repository; a secret generator's strings are collected for the scrubbing of render errors."""
        secret = kind in ("secretGenerator", "SecretGenerator")
        fields = SECRET_GENERATOR_FIELDS if secret else GENERATOR_FIELDS
        if kind in BUILTIN_FIELDS:
            fields = BUILTIN_FIELDS[kind]
        self.check_keys(origin, where, generator, fields, closed=False)
        entries: set[str] = set()
        values: set[str] = set()
        for literal in self.strings(origin, f"{where}.literals", generator.get("literals")):
            more_entries, more_values = literal_forms(literal)
            entries |= more_entries
            values |= more_values
        values |= self._generator_files(origin, where, generator, base, kind, secret=secret)
        env_files = self._env_files(origin, where, generator, base, kind)
        if not secret:
            return
        for path in env_files:
            more_entries, more_values = _env_file_forms(path)
            entries |= more_entries
            values |= more_values
        self._add_secret(origin, generator, name, entries, values)

    def _generator_files(
        self, origin: Path, where: str, generator: Mapping[Any, Any], base: Path, kind: str, *, secret: bool
    ) -> set[str]:
        """Check the ``files`` entries (PATH or KEY=PATH); the strings of a secret generator's files."""
        values: set[str] = set()
        for value in self.strings(origin, f"{where}.files", generator.get("files")):
            separators = value.count("=")
            if separators > 1 or value.startswith("=") or value.endswith("="):
                raise RestrictionError(
                    f"{self.display(origin)}: {where}.files entry {shown(value)} must be PATH or KEY=PATH"
                )
            path = self.file(origin, kind, value.split("=", 1)[-1], base)
            if secret and path != Path() and is_file(path):
                content = path.read_bytes()
                decoded = content.decode("utf-8", errors="replace")
                values.update({b64text(content), decoded.strip()})
                for text in decoded.splitlines():
                    if len(text.strip()) >= SHORTEST_SECRET_LINE:
                        values.update({text, text.strip()})
        return values

    def _env_files(
        self, origin: Path, where: str, generator: Mapping[Any, Any], base: Path, kind: str
    ) -> list[Path]:
        """Check the ``envs`` (and legacy ``env``) entries; the env files that exist."""
        env_files: list[Path] = []
        env = self.string(origin, f"{where}.env", generator.get("env"))
        for value in [*self.strings(origin, f"{where}.envs", generator.get("envs")), *([env] if env else [])]:
            path = self.file(origin, kind, value, base)
            if path != Path() and is_file(path):
                env_files.append(path)
        return env_files

    def _add_secret(
        self, origin: Path, generator: Mapping[Any, Any], name: str, entries: set[str], values: set[str]
    ) -> None:
        """Record a secret generator and its (non-blank) strings."""
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


def _env_file_forms(path: Path) -> tuple[set[str], set[str]]:
    """The forms of every non-blank line of a secret generator's env file."""
    entries: set[str] = set()
    values: set[str] = set()
    for chunk in path.read_bytes().split(b"\n"):
        line = chunk.removesuffix(b"\r")
        if line.strip():
            more_entries, more_values = secret_line_forms(line)
            entries |= more_entries
            values |= more_values
    return entries, values
