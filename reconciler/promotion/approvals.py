"""Approval counting on one Promotion: who may not approve it (no self-approval: the requester and
the authors of what is promoted, unless the pipeline allows it) and the ``approvalSummary`` its
status shows."""

from __future__ import annotations

from reconciler.objects import Body
from reconciler.promotion.policy import PromotionSettings, counted_approvals


def excluded(settings: PromotionSettings, body: Body) -> list[str]:
    """The identities whose approval of ``body`` does not count."""
    spec = body.get("spec") or {}
    pipeline = settings.pipeline_named(str(spec.get("pipeline", "")))
    if pipeline is not None and pipeline.allow_self_approval:
        return []
    return [str(spec.get("requestedBy", "")), *[str(a) for a in spec.get("authors") or []]]


def approvers(settings: PromotionSettings, body: Body) -> list[str]:
    """The approvals of ``body`` that count (bound to its revision, no self-approval)."""
    spec, status = body.get("spec") or {}, body["status"]
    return counted_approvals(
        status.get("approvals") or [], str(spec.get("sourceRevision")), excluded(settings, body)
    )


def refresh_summary(settings: PromotionSettings, body: Body) -> int:
    """Write the approval count into ``body``'s status; returns the number counted."""
    spec, status = body.get("spec") or {}, body["status"]
    counted = approvers(settings, body)
    status["approvalSummary"] = f"{len(counted)}/{spec.get('requiredApprovals', 1)}"
    return len(counted)
