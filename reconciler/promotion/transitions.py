"""Writes to a Promotion's status, always on the fresh object: moving it to a final phase
(``finish``: audited, the duration observed) and updating fields of a promotion still running
(``set``), never over a terminal phase."""

from __future__ import annotations

import time
from typing import Any

from reconciler.objects import Body
from reconciler.promotion.approvals import refresh_summary
from reconciler.promotion.audit import Auditor, PromotionMetrics
from reconciler.promotion.policy import PromotionSettings
from reconciler.promotion.store import (
    ACTIVE_PHASES,
    TERMINAL_PHASES,
    PromotionStore,
    now_iso,
    parse_iso,
    phase,
)


class StatusWriter:
    """Phase transitions and status updates of promotions."""

    def __init__(
        self,
        settings: PromotionSettings,
        store: PromotionStore,
        metrics: PromotionMetrics,
        auditor: Auditor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.auditor = auditor

    async def finish(
        self,
        body: Body,
        final: str,
        message: str,
        *,
        warning: bool = False,
        only: tuple[str, ...] = ACTIVE_PHASES,
    ) -> bool:
        """Move the promotion to ``final`` if it is (still, on the fresh object) in one of ``only``;
        True when this call did."""
        done: list[bool] = []

        def mutate(fresh: Body) -> bool:
            done.clear()
            if phase(fresh) not in only:
                return False
            fresh["status"].update({"phase": final, "message": message, "finishedAt": now_iso()})
            done.append(True)
            return True

        stored = await self.store.update_status(body["metadata"]["name"], mutate)
        if stored is None or not done:
            return False
        self._observe_duration(body, final)
        await self.auditor.audit(
            stored, final, message, warning=final not in ("Succeeded", "Superseded") or warning
        )
        return True

    def _observe_duration(self, body: Body, final: str) -> None:
        created = parse_iso(str(body["metadata"].get("creationTimestamp", "")))
        pipeline = str((body.get("spec") or {}).get("pipeline", ""))
        if final in ("Succeeded", "Failed") and created:
            self.metrics.duration.labels(pipeline=pipeline, outcome=final).observe(
                max(0.0, time.time() - created)
            )

    async def set(self, body: Body, *, summary: bool = False, **fields: Any) -> Body:
        """Write ``fields`` into the status (and, with ``summary``, the approval count of the fresh
        object); never over a terminal phase."""

        def mutate(fresh: Body) -> bool:
            if phase(fresh) in TERMINAL_PHASES:
                return False
            before = fresh["status"].get("approvalSummary")
            if summary:
                refresh_summary(self.settings, fresh)
            changed = {k: v for k, v in fields.items() if fresh["status"].get(k) != v}
            fresh["status"].update(changed)
            return bool(changed) or fresh["status"].get("approvalSummary") != before

        return await self.store.update_status(body["metadata"]["name"], mutate) or body
