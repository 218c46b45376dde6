"""The vocabulary every promotion unit shares: the refusal error, what promotions see of an
environment (``EnvView``), what they need from the daemon (``Host``), the phases, and the API's
summary of a Promotion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.objects import Body
from reconciler.promotion.policy import Pipeline
from reconciler.promotion.store import OPEN_PHASES, TERMINAL_PHASES, phase
from reconciler.refusal import Refusal

PHASES = ("Pending", "Approved", "Promoting", *TERMINAL_PHASES)


class PromotionError(Refusal):
    """A promotion call was refused by the policy or the promotion's state."""


@dataclass(frozen=True)
class EnvView:
    """What promotions need to know about one environment."""

    name: str
    path: str
    revision: str  # the revision whose inputs are applied ("" before the first sync)
    input_key: str  # the render-input key of that revision
    ok: bool  # Synced and Healthy (condition Ready)
    condition: str
    reason: str
    message: str
    healthy_since: float  # since when it has been Ready at ``input_key`` (0: not Ready)


class Host(Protocol):
    """What the controller needs from the daemon."""

    def environment_view(self, name: str) -> EnvView | None:
        """The current state of an environment."""

    def request_fetch(self) -> None:
        """Fetch the repository now (a promotion commit was pushed)."""

    async def input_key_at(self, environment: str, revision: str) -> str:
        """The render-input key of ``environment`` at ``revision``."""

    def head_revision(self) -> str:
        """The branch head last fetched ("" before the first fetch); followers fetch too."""


def succeeded(promotions: list[Body], pipeline: Pipeline, kind: str = "") -> list[Body]:
    """The Succeeded promotions of ``pipeline`` (of type ``kind`` when given), oldest first."""
    return [
        p
        for p in promotions
        if (p.get("spec") or {}).get("pipeline") == pipeline.name
        and (not kind or p["spec"].get("type") == kind)
        and phase(p) == "Succeeded"
    ]


def is_open(body: Body) -> bool:
    """Still taking decisions (Pending or Approved; one being created counts as Pending)."""
    return phase(body) in OPEN_PHASES


def _decisions(records: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    fields = ("identity", "revision", "at", "via", "comment")
    return [{k: record.get(k, "") for k in fields} for record in records or []]


def summary(body: Body) -> dict[str, Any]:
    """The API's view of a promotion."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return {
        "id": body["metadata"]["name"],
        "pipeline": spec.get("pipeline"),
        "type": spec.get("type"),
        "from": spec.get("from"),
        "to": spec.get("to"),
        "revision": spec.get("sourceRevision", ""),
        "requestedBy": spec.get("requestedBy", ""),
        "requestedAt": body["metadata"].get("creationTimestamp", ""),
        "images": spec.get("images") or [],
        "files": spec.get("files") or [],
        "authors": spec.get("authors") or [],
        "requiredApprovals": spec.get("requiredApprovals", 1),
        "phase": phase(body),
        "message": status.get("message", ""),
        "approvals": _decisions(status.get("approvals")),
        "rejections": _decisions(status.get("rejections")),
        "approvalSummary": status.get("approvalSummary", ""),
        "commit": status.get("commit", ""),
        "previousImages": status.get("previousImages") or [],
    }
