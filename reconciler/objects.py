"""Shared types of the sync engine: object identity, rendered manifests, and the ChangeSet.

Every stage speaks these types: render produces ``Manifest``s, plan orders and pairs them, apply and
prune return ``ChangeSet`` entries, and logs, metrics, events and CLI output are all derived from one
``ChangeSet``, never computed twice.
"""

from __future__ import annotations

import copy
import enum
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]

# Ownership marks written on every object we apply.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "reconciler"
ENVIRONMENT_ANNOTATION = "reconciler.dev/environment"
FIELD_MANAGER = "reconciler"

# Per-object behaviour, set by users in Git.
WAVE_ANNOTATION = "reconciler.dev/wave"
PRUNE_ANNOTATION = "reconciler.dev/prune"  # "disabled" never prunes; "enabled" opts protected kinds in
FORCE_CONFLICTS_ANNOTATION = "reconciler.dev/force-conflicts"  # "false" refuses to take fields over
RECREATE_ANNOTATION = "reconciler.dev/recreate-on-immutable"  # "true" deletes and recreates
ADOPT_ANNOTATION = "reconciler.dev/adopt"  # "true" takes an object over from another environment


@dataclass(frozen=True, order=True)
class ObjectKey:
    """The identity of a Kubernetes object: API group (not version), kind, namespace, name."""

    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, body: Body) -> ObjectKey:
        """The key of a manifest or live object."""
        api_version = str(body.get("apiVersion", ""))
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        metadata = body.get("metadata") or {}
        return cls(
            group,
            str(body.get("kind", "")),
            str(metadata.get("namespace") or ""),
            str(metadata.get("name", "")),
        )

    @property
    def group_kind(self) -> str:
        """``Kind.group`` as kubectl prints it (``Deployment.apps``), or just ``Kind`` for the core group."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def __str__(self) -> str:
        """``Kind/namespace/name`` (or ``Kind/name`` for cluster-scoped objects): used in every message."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def to_json(self) -> list[str]:
        """A compact, stable form for the inventory."""
        return [self.group, self.kind, self.namespace, self.name]

    @classmethod
    def from_json(cls, raw: list[str]) -> ObjectKey:
        """Inverse of ``to_json``."""
        group, kind, namespace, name = raw
        return cls(group, kind, namespace, name)


def environment_mark(body: Body) -> str:
    """The environment an object's ``reconciler.dev/environment`` annotation names ("" when none)."""
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(ENVIRONMENT_ANNOTATION) or "")


def content_hash(body: Body) -> str:
    """A stable hash of a manifest's content (key order does not matter)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Manifest:
    """One desired object as rendered from Git, with where it came from.

    Bodies are never mutated in place: derived manifests share parts of their bodies with the ones
    they came from (``mark_owned``), so a change goes to a copy (``copy_body``) or a new dict."""

    body: Body
    source: str = ""

    @functools.cached_property
    def key(self) -> ObjectKey:
        """The object's identity (computed once: hot in planning, pairing and health at thousands of
        objects; bodies are not renamed in place, a changed body is a new ``Manifest``)."""
        return ObjectKey.of(self.body)

    @property
    def api_version(self) -> str:
        """``group/version`` or ``version``."""
        return str(self.body.get("apiVersion", ""))

    @property
    def annotations(self) -> dict[str, str]:
        """The object's annotations (empty when none)."""
        return dict((self.body.get("metadata") or {}).get("annotations") or {})

    def annotation(self, name: str, default: str = "") -> str:
        """One annotation's value."""
        return self.annotations.get(name, default)

    def with_body(self, body: Body) -> Manifest:
        """A copy with another body and the same source."""
        return Manifest(body, self.source)

    def copy_body(self) -> Body:
        """A deep copy of the body, safe to mutate."""
        return copy.deepcopy(self.body)


class Action(enum.StrEnum):
    """What a sync did (or would do) to one object."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ChangeSetEntry:
    """One object's outcome: the action, a redacted diff, and a human message when useful."""

    key: ObjectKey
    action: Action
    diff: str = ""
    message: str = ""


@dataclass
class ChangeSet:
    """The result of one apply or prune: the single source for logs, metrics, events and output."""

    entries: list[ChangeSetEntry] = field(default_factory=list)

    def add(self, entry: ChangeSetEntry) -> None:
        """Record one object's outcome."""
        self.entries.append(entry)

    def extend(self, other: ChangeSet) -> None:
        """Append every entry of another ChangeSet."""
        self.entries.extend(other.entries)

    def by_action(self, action: Action) -> list[ChangeSetEntry]:
        """Entries with this action, in the order they happened."""
        return [entry for entry in self.entries if entry.action == action]

    def counts(self) -> dict[str, int]:
        """Number of entries per action (every action listed, zeros included)."""
        result = {action.value: 0 for action in Action}
        for entry in self.entries:
            result[entry.action.value] += 1
        return result

    @property
    def changed(self) -> bool:
        """True when anything was created, configured or deleted."""
        return any(e.action in (Action.CREATED, Action.CONFIGURED, Action.DELETED) for e in self.entries)

    def summary(self) -> str:
        """``3 created, 1 configured, 10 unchanged`` (actions with a zero count left out)."""
        parts = [f"{count} {action}" for action, count in self.counts().items() if count]
        return ", ".join(parts) if parts else "no objects"
