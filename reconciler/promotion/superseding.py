"""The superseding rule: at most one open (Pending or Approved) promotion per pipeline, the newest in
the order every replica agrees on; applied after each request and by the leader's every pass."""

from __future__ import annotations

from reconciler.objects import Body
from reconciler.promotion.store import OPEN_PHASES, order
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import is_open


async def supersede(status: StatusWriter, promotions: list[Body], pipeline: str) -> set[str]:
    """Leave at most one open (Pending or Approved) promotion of ``pipeline``: the newest.

    "Newest" is the order every replica agrees on (``store.order``: creationTimestamp, then the
    creating replica's request time, then the name). Each request lists after its create and
    supersedes every open promotion of the pipeline but the newest it sees, its own included; the
    last of any set of simultaneous requests to list sees them all, so exactly the newest survives
    whatever the interleaving, on any number of replicas. The leader's pass applies the same rule
    (a replica may die between its create and its list). Returns the names it finished."""
    candidates = sorted(
        (p for p in promotions if (p.get("spec") or {}).get("pipeline") == pipeline and is_open(p)),
        key=order,
    )
    finished: set[str] = set()
    if len(candidates) < 2:
        return finished
    newest = candidates[-1]["metadata"]["name"]
    for other in candidates[:-1]:
        if await status.finish(other, "Superseded", f"superseded by {newest}", only=OPEN_PHASES):
            finished.add(other["metadata"]["name"])
    return finished
