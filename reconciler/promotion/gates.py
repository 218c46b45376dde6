"""The gates of an open (Pending or Approved) promotion, evaluated on each leader pass: expiry, the
source moving on (superseded), approvals, the source's health and soak time, then a promotion window;
a promotion that passes them all is moved to Promoting."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from reconciler.objects import Body
from reconciler.promotion.approvals import approvers, refresh_summary
from reconciler.promotion.audit import Auditor
from reconciler.promotion.policy import Pipeline, PromotionSettings, window_verdict
from reconciler.promotion.store import OPEN_PHASES, PromotionStore, now_iso, parse_iso, phase
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import EnvView, Host


class Gates:
    """Moves open promotions on: to Expired, Superseded, Approved or Promoting, or records why they
    still wait."""

    def __init__(
        self,
        settings: PromotionSettings,
        store: PromotionStore,
        host: Host,
        *,
        status: StatusWriter,
        auditor: Auditor,
        wake: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.host = host
        self.status = status
        self.auditor = auditor
        self.wake = wake

    async def advance(self, body: Body, pipeline: Pipeline) -> Body | None:
        """One pass over an open promotion; the promotion, now Promoting, when its commit is due."""
        spec = body.get("spec") or {}
        now = time.time()
        if await self._expire(body, pipeline, now):
            return None
        rollback = spec.get("type") == "Rollback"
        source = self.host.environment_view(str(spec.get("from")))
        if not rollback and await self._source_moved_on(body, source):
            return None
        soak = pipeline.rollback.soak if rollback else pipeline.soak
        if self.waiting(body, source, now, soak, rollback=rollback):
            await self._update_pending(body, source, now, soak, rollback=rollback)
            return None
        return await self._start(body, pipeline)

    async def _expire(self, body: Body, pipeline: Pipeline, now: float) -> bool:
        """Expire a promotion not approved in time; True when it is."""
        created = parse_iso(str(body["metadata"].get("creationTimestamp", "")))
        if created and now - created > pipeline.expire_after:
            await self.status.finish(
                body, "Expired", f"not approved within {pipeline.expire_after:.0f} s", only=OPEN_PHASES
            )
            return True
        return False

    async def _source_moved_on(self, body: Body, source: EnvView | None) -> bool:
        """Supersede a promotion whose source now runs other inputs; True when it does."""
        spec = body.get("spec") or {}
        if source is not None and source.input_key and source.input_key != spec.get("sourceInputKey"):
            await self.status.finish(
                body,
                "Superseded",
                f"{spec.get('from')} moved on to {source.revision[:12]}: request again",
                only=OPEN_PHASES,
            )
            return True
        return False

    def waiting(
        self, body: Body, source: EnvView | None, now: float, soak: float, *, rollback: bool
    ) -> list[str]:
        """What a Pending promotion still waits for (approvals, the source's health, soak time)."""
        spec = body.get("spec") or {}
        waiting: list[str] = []
        counted = refresh_summary(self.settings, body)
        required = int(spec.get("requiredApprovals", 1))
        if counted < required:
            waiting.append(f"{counted}/{required} approvals")
        if not rollback:
            if source is None or not source.ok or source.input_key != spec.get("sourceInputKey"):
                waiting.append(f"{spec.get('from')} to be Synced and Healthy at the candidate")
            elif now - source.healthy_since < soak:
                waiting.append(f"soak time: {now - source.healthy_since:.0f} of {soak:.0f} s")
        return waiting

    async def _update_pending(
        self, body: Body, source: EnvView | None, now: float, soak: float, *, rollback: bool
    ) -> None:
        """Record why a promotion is still Pending. The gates are evaluated again on the fresh object
        inside the write, so an approval recorded after this pass listed the promotions is counted and
        never overwritten with a stale summary."""

        def mutate(fresh: Body) -> bool:
            if phase(fresh) not in ("Pending", "Approved"):
                return False
            status = fresh["status"]
            before = (status.get("phase"), status.get("message"), status.get("approvalSummary"))
            waiting = self.waiting(fresh, source, now, soak, rollback=rollback)
            if not waiting:
                self.wake()  # every gate is met now: the next pass moves it on
                return bool(before[2] != status.get("approvalSummary"))
            # an Approved promotion whose source regressed goes back to Pending until it recovers
            status.update(phase="Pending", message="waiting for " + "; ".join(waiting))
            return bool(before != (status["phase"], status["message"], status["approvalSummary"]))

        await self.store.update_status(body["metadata"]["name"], mutate)

    async def _start(self, body: Body, pipeline: Pipeline) -> Body | None:
        """Every gate but the window is met: Approved, then Promoting once a window is open."""
        open_, why = window_verdict(pipeline.windows, dt.datetime.now(dt.UTC))
        message = (
            "approved; writing the commit" if open_ else f"approved; waiting for a promotion window: {why}"
        )
        if phase(body) == "Pending":
            approved = await self._approve(body, message)
            if approved is None:
                return None
            body = approved
        if not open_:
            await self.status.set(body, message=message)
            return None
        body = await self.status.set(
            body, phase="Promoting", promotingAt=now_iso(), message="writing the commit"
        )
        if phase(body) != "Promoting":
            return None  # finished since this pass listed it: never commit a superseded promotion
        return body

    async def _approve(self, body: Body, message: str) -> Body | None:
        """Move a Pending promotion to Approved (audited); None when it finished meanwhile."""
        # phase and message in one write: a reader never sees Approved with a stale message
        body = await self.status.set(
            body, summary=True, phase="Approved", approvedAt=now_iso(), message=message
        )
        if phase(body) != "Approved":
            return None  # finished (superseded, rejected, expired) since this pass listed it
        await self.auditor.audit(body, "Approved", f"approved by {', '.join(approvers(self.settings, body))}")
        return body
