"""Approvals and rejections of a promotion: every check (the signed action and body, the phase, the
exact revision, the approver list, no self-approval, replays, double approvals) made on the fresh
object inside the status write, so a concurrent decision is never lost or doubled; then audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.objects import Body
from reconciler.promotion.approvals import excluded, refresh_summary
from reconciler.promotion.audit import Auditor, PromotionMetrics
from reconciler.promotion.policy import PromotionSettings
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.store import PromotionStore, now_iso, phase
from reconciler.promotion.views import PromotionError


def _record(call: SignedCall) -> dict[str, Any]:
    """What the status keeps of one decision."""
    return {
        "identity": call.identity,
        "revision": str(call.payload.get("revision", "")),
        "at": now_iso(),
        "via": call.key_id,
        "nonce": call.nonce,
        "comment": str(call.payload.get("comment", ""))[:500],
    }


def _record_into(
    settings: PromotionSettings, fresh: Body, call: SignedCall, record: dict[str, Any], *, approve: bool
) -> None:
    """Write an approval (and its count) or a rejection (and the Rejected phase) into ``fresh``."""
    status = fresh["status"]
    status.setdefault("nonces", []).append(call.nonce)
    if approve:
        status.setdefault("approvals", []).append(record)
        refresh_summary(settings, fresh)
    else:
        status.setdefault("rejections", []).append(record)
        status["phase"] = "Rejected"
        status["finishedAt"] = now_iso()
        status["message"] = f"rejected by {call.identity}" + (
            f": {record['comment']}" if record["comment"] else ""
        )


class Decisions:
    """The approve and reject operations of the promotions API."""

    def __init__(
        self,
        settings: PromotionSettings,
        store: PromotionStore,
        metrics: PromotionMetrics,
        auditor: Auditor,
        wake: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.auditor = auditor
        self.wake = wake

    async def decide(self, name: str, call: SignedCall, *, approve: bool) -> Body:
        """Record an approval (or a rejection) of promotion ``name`` after every check."""
        record = _record(call)
        problem: list[PromotionError] = []

        def mutate(fresh: Body) -> bool:
            try:
                self._check(fresh, name, call, approve=approve)
            except PromotionError as exc:
                problem.append(exc)
                return False
            _record_into(self.settings, fresh, call, record, approve=approve)
            return True

        # checked on the fresh object inside the write, so a concurrent decision is never lost or doubled
        stored = await self.store.update_status(name, mutate)
        if stored is None:
            problem.append(PromotionError(404, f"no promotion named {name!r}"))
        if problem:
            message = f"{call.action} by {call.identity} (key {call.key_id}) refused: {problem[0].reason}"
            await self.auditor.refused(name, stored, message, identity=call.identity)
            raise problem[0]
        assert stored is not None
        await self._accepted(stored, call, approve=approve)
        self.wake()
        return stored

    async def _accepted(self, stored: Body, call: SignedCall, *, approve: bool) -> None:
        """Count and audit a decision that was recorded."""
        pipeline_name = str(stored["spec"].get("pipeline", "unknown"))
        self.metrics.approvals.labels(
            pipeline=pipeline_name, result="accepted" if approve else "rejected"
        ).inc()
        if approve:
            await self.auditor.audit(
                stored,
                "ApprovalReceived",
                f"approved by {call.identity} (key {call.key_id}); "
                f"{stored['status'].get('approvalSummary', '')} approvals",
                identity=call.identity,
            )
        else:
            await self.auditor.audit(
                stored, "Rejected", stored["status"]["message"], warning=True, identity=call.identity
            )

    def _check(self, body: Body, name: str, call: SignedCall, *, approve: bool) -> None:
        """Refuse a decision that is not for this promotion as it is now."""
        spec = body.get("spec") or {}
        action = "approve" if approve else "reject"
        if call.action != action:
            raise PromotionError(400, f"the signed action is {call.action!r}, not {action!r}")
        if call.payload.get("promotion") != name:
            raise PromotionError(400, f"the signed body is for promotion {call.payload.get('promotion')!r}")
        current = phase(body)
        if current not in ("Pending", "Approved"):
            raise PromotionError(409, f"promotion {name} is {current}: it takes no more decisions")
        revision = str(call.payload.get("revision", ""))
        if revision != spec.get("sourceRevision"):
            raise PromotionError(
                409,
                f"this decision is for revision {revision[:12] or '(none)'}, but the promotion is of "
                f"{str(spec.get('sourceRevision', ''))[:12]}: decisions are bound to the exact revision",
            )
        self._check_approver(body, call, approve=approve)
        status = body.get("status") or {}
        if call.nonce in (status.get("nonces") or []):
            raise PromotionError(409, "this decision was already received (replayed nonce)")
        if approve and any(a.get("identity") == call.identity for a in status.get("approvals") or []):
            raise PromotionError(409, f"{call.identity} has already approved {name}")

    def _check_approver(self, body: Body, call: SignedCall, *, approve: bool) -> None:
        """Refuse an identity the pipeline does not list, and self-approval."""
        spec = body.get("spec") or {}
        pipeline = self.settings.pipeline_named(str(spec.get("pipeline", "")))
        if pipeline is None:
            raise PromotionError(409, f"pipeline {spec.get('pipeline')!r} is no longer configured")
        if not self.settings.may_approve(pipeline, call.identity):
            raise PromotionError(
                403, f"{call.identity} is not on the approver list of pipeline {pipeline.name}"
            )
        if approve and call.identity.lower() in {e.lower() for e in excluded(self.settings, body)}:
            raise PromotionError(
                403,
                f"{call.identity} requested or authored what is promoted and cannot approve it "
                "(no self-approval)",
            )
