"""What a render may do (``LoadPolicy``), what checking its kustomization graph returns
(``RenderInputs``: the files it reads and the secretGenerators' strings) and the refusal
(``RestrictionError``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
