"""Path resolution for the render restrictions: every path a kustomization names is resolved (symlinks
included) and refused when it leaves the repository; remote references are recognised (and refused
unless allowed); the directories looked into are recorded for the render cache."""

from __future__ import annotations

import os
import re
from pathlib import Path

from reconciler.render.inputs import LoadPolicy, RenderInputs, RestrictionError
from reconciler.render.yamlkeys import shown

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[a-z][a-z0-9-]*@|[a-z0-9.-]+\.[a-z]{2,}/)", re.IGNORECASE)


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


def looks_remote(value: str) -> bool:
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


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def is_symlink(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:
        return False


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


class PathResolver:
    """Resolves the paths a kustomization graph names, inside one repository."""

    def __init__(self, root: Path, policy: LoadPolicy) -> None:
        self.root = root.resolve()
        self.policy = policy
        self.inputs = RenderInputs()

    def display(self, path: Path) -> str:
        """``path`` relative to the repository (as it is when outside it)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def locate(self, origin: Path, field_name: str, value: str, base: Path, *, required: bool) -> Path | None:
        """Resolve ``value`` relative to ``base`` and insist it stays inside the repository.

        Returns None for an allowed remote reference, or (unless ``required``) for a path that does not
        exist; a path that leaves the repository is refused either way."""
        where = f"{self.display(origin)}: {field_name} entry {shown(value)}"
        if looks_remote(value):
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
        if not is_dir(resolved):
            # a file is read from its directory
            self.inputs.directories.add(lexical.parent)
            self.inputs.directories.add(resolved.parent)
        for step in (lexical, *lexical.parents):
            if step == self.root or self.root not in step.parents:
                break
            if is_symlink(step):  # a symlink on the way can be re-pointed in its own directory
                self.inputs.directories.add(step.parent)
        if resolved != self.root and self.root not in resolved.parents:
            escapes_lexically = lexical != self.root and self.root not in lexical.parents
            how = "" if escapes_lexically else "through a symlink "
            raise RestrictionError(
                f"{where} points {how}outside the repository; renders may only read files inside it"
            )
        if not exists(resolved):
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
        if path != Path() and is_file(path):
            self.inputs.files.add(path)
        return path
