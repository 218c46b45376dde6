"""The JSON bodies of the daemon's HTTP API as pydantic models: their one definition.

``reconciler.server.openapi`` turns these models into the document's ``components.schemas`` (enums
come from the code's own ``Condition``, ``Reason``, ``HealthStatus`` and ``Action``, never copied), and a
unit test validates real responses against them. The handlers still answer the plain dicts they build
(``EnvironmentState.status()``, ``promotion.views.summary``, the webhook replies); these models describe
those dicts field for field and refuse any other field (``extra="forbid"``), so a field the code starts
to emit without a model that names it fails the test. Field names are the wire names (camelCase);
``from`` is the one alias. A field that is left out of a body when it has nothing to say (rather than
sent as ``null``) is ``_absent()``: not required, not nullable, and without a default in the schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.health import HealthStatus
from reconciler.objects import Action
from reconciler.sync.outcome import Condition, Reason


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _absent(description: str = "") -> Any:
    """A field that is missing from the body (never ``null``) when it does not apply."""
    return Field(default=None, description=description or None, json_schema_extra=_no_default)


class Body(BaseModel):
    """A response body: exactly the fields the code emits."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- probes, errors, webhooks -------------------------------------------------------------------------


class Error(Body):
    """A refusal or a missing resource."""

    error: str


class Liveness(Body):
    """The daemon is alive."""

    status: Literal["ok"]


class LivenessFailure(Body):
    """An internal loop of the daemon died (the kubelet should restart the process)."""

    status: Literal["failed"]
    reasons: list[str] = Field(description="the loops that died")


class Readiness(Body):
    """Ready, or the reasons it is not (Git not fetched or stale, the home cluster unreachable); and what
    is degraded without making the replica unready (another cluster unreachable)."""

    ready: bool
    reasons: list[str]
    degraded: list[str] = []


class WebhookResult(Body):
    """What became of a push webhook."""

    result: Literal["accepted", "ignored", "duplicate", "pong", "refused", "rate-limited", "shutting-down"]
    reason: str = _absent("why it was ignored, refused or rate limited")


# -- environments ---------------------------------------------------------------------------------------

# an environment's reason: a sync's outcome, or what holds it back before or instead of a sync
# (``Pending`` before the first sync, ``depends_on`` not Ready, ``reconciler.source.gate.UNVERIFIED``)
StatusReason = Reason | Literal["Pending", "DependencyNotReady", "UnverifiedCommit"]


class EnvironmentCondition(Body):
    """A kstatus condition of an environment: the one it is in is True, the others False."""

    type: Condition
    status: Literal["True", "False"]
    reason: StatusReason
    message: str
    lastTransitionTime: dt.datetime


class ChangeSetEntry(Body):
    """One object the last sync did not leave unchanged."""

    object: str = Field(description="Kind/namespace/name")
    action: Action
    message: str = _absent()


class ChangeSetSummary(Body):
    """The last sync's ChangeSet without diffs; unchanged objects are only counted."""

    summary: str = Field(examples=["2 created, 1 configured, 7 unchanged"])
    counts: dict[Action, int]
    objects: list[ChangeSetEntry]
    omitted: int = Field(description="changed objects left out of objects")


class LastAppliedChange(Body):
    """The last sync that created, configured or deleted something (a later no-op does not hide it)."""

    revision: str
    time: str = _absent("RFC 3339")
    summary: str = _absent()


class EnvironmentStatus(Body):
    """One environment's status (``EnvironmentState.status()`` plus the daemon's Git staleness). The
    fields from ``message`` on are absent before the first sync (``message`` is there while a sync is
    held back)."""

    name: str
    path: str
    cluster: str
    owner: str = _absent("with sharding: the replica that syncs it")
    revision: str = Field(description="revision of the last sync (or fetch)")
    appliedRevision: str = Field(description="last revision applied completely")
    conditions: list[EnvironmentCondition]
    syncs: int
    lastSyncTime: float | None = Field(description="Unix time")
    lastSuccessTime: float | None = Field(description="Unix time")
    lastAppliedChange: LastAppliedChange = _absent()
    sync: Literal["Synced", "OutOfSync", "Unknown"]
    health: HealthStatus
    condition: Condition
    reason: StatusReason
    message: str = _absent()
    changes: dict[Action, int] = _absent("objects of the last sync by action")
    lastChangeSet: ChangeSetSummary = _absent()
    unhealthy: dict[str, str] = _absent("object -> health: message")
    pruneBlocked: str = _absent()
    inventoryObjects: int | None = _absent("objects in the inventory the last sync wrote (null: none)")
    durations: dict[str, float] = _absent("seconds per stage of the last sync")
    lastError: str = _absent()
    gitStale: bool
    gitError: str
    gitFailures: int


class EnvironmentList(Body):
    """Every environment's status."""

    environments: list[EnvironmentStatus]


# -- promotions -----------------------------------------------------------------------------------------


class PromotionImage(Body):
    """An ``images:`` entry of a kustomization (empty fields left out)."""

    name: str
    newName: str = _absent()
    newTag: str = _absent()
    digest: str = _absent()


class PromotionDecision(Body):
    """An approval or a rejection."""

    identity: str
    revision: str
    at: str = Field(description="RFC 3339")
    via: str = Field(description="the key that signed it")
    comment: str


class Promotion(Body):
    """A promotion's summary (``promotion.views.summary``; see docs/promotions.md)."""

    model_config = ConfigDict(populate_by_name=False)

    id: str
    pipeline: str
    type: Literal["Promotion", "Rollback"]
    from_: str = Field(alias="from")
    to: str
    revision: str
    requestedBy: str
    requestedAt: str
    images: list[PromotionImage]
    files: list[str]
    authors: list[str]
    requiredApprovals: int
    phase: Literal[
        "Pending", "Approved", "Promoting", "Succeeded", "Failed", "Rejected", "Expired", "Superseded"
    ]
    message: str
    approvals: list[PromotionDecision]
    rejections: list[PromotionDecision]
    approvalSummary: str
    commit: str
    previousImages: list[PromotionImage]


class PromotionList(Body):
    """Every promotion, newest first."""

    promotions: list[Promotion]


class PromotionPreview(Body):
    """What a request would commit (``dry_run: true``), nothing created."""

    dryRun: Literal[True]
    from_: str = Field(alias="from")
    to: str
    revision: str
    images: list[PromotionImage]
    files: list[str]
    diff: str = Field(description="the unified diff of the target overlay at the branch head")


# every body a route answers, in the order the document lists them (nested models come along)
MODELS: tuple[type[Body], ...] = (
    Error,
    Liveness,
    LivenessFailure,
    Readiness,
    WebhookResult,
    EnvironmentStatus,
    EnvironmentList,
    Promotion,
    PromotionList,
    PromotionPreview,
)
