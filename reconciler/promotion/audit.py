"""The promotion audit trail: every event (request, approval, refusal, rejection, commit, outcome)
recorded three ways, as a Kubernetes Event on the Promotion, a structured log line and a metric; and
the promotion metrics on the daemon's registry."""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.objects import Body
from reconciler.promotion.store import PromotionStore

log = structlog.get_logger(__name__)


class PromotionMetrics:
    """Promotion metrics on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.phases = Gauge(
            "reconciler_promotions",
            "Promotions by pipeline and phase (current count).",
            ["pipeline", "phase"],
            registry=registry,
        )
        self.approvals = Counter(
            "reconciler_promotion_approvals_total",
            "Approvals and rejections received, by pipeline and result (accepted, rejected, refused).",
            ["pipeline", "result"],
            registry=registry,
        )
        self.events = Counter(
            "reconciler_promotion_events_total",
            "Audited promotion events by pipeline and event (Requested, Approved, Committed, Succeeded...).",
            ["pipeline", "event"],
            registry=registry,
        )
        self.duration = Histogram(
            "reconciler_promotion_duration_seconds",
            "From request to Succeeded or Failed.",
            ["pipeline", "outcome"],
            registry=registry,
            buckets=(10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600),
        )


class Auditor:
    """Records promotion events: an Event on the Promotion, a log line and the events metric."""

    def __init__(self, store: PromotionStore, metrics: PromotionMetrics) -> None:
        self.store = store
        self.metrics = metrics

    async def audit(
        self, body: Body, event: str, message: str, *, warning: bool = False, **fields: Any
    ) -> None:
        """Record ``event`` of the promotion ``body``."""
        spec = body.get("spec") or {}
        pipeline = str(spec.get("pipeline", "unknown"))
        self.metrics.events.labels(pipeline=pipeline, event=event).inc()
        logger = log.warning if warning else log.info
        logger(
            f"promotion {event}",
            promotion_event=event,
            promotion=body["metadata"]["name"],
            pipeline=pipeline,
            source=spec.get("from"),
            target=spec.get("to"),
            revision=str(spec.get("sourceRevision", ""))[:12],
            message=message,
            **fields,
        )
        await self.store.event(body, event, message, warning=warning)

    async def refused(self, name: str, body: Body | None, message: str, **fields: Any) -> None:
        """Audit a refused decision: on the Promotion when it exists, else in the log alone."""
        pipeline = str(((body or {}).get("spec") or {}).get("pipeline", "unknown"))
        self.metrics.approvals.labels(pipeline=pipeline, result="refused").inc()
        if body is not None:
            await self.audit(body, "Refused", message, warning=True, **fields)
        else:
            log.warning(
                "promotion Refused", promotion_event="Refused", promotion=name, message=message, **fields
            )
