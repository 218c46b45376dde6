"""The outcome of a committed promotion: Succeeded once the target is Synced and Healthy at a revision
containing the commit, Failed when the target stalls there or does not become healthy in time; until
then the repository is fetched again."""

from __future__ import annotations

import time

from reconciler.objects import Body
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.policy import Pipeline
from reconciler.promotion.store import parse_iso
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import Host


class Outcome:
    """Decides how a Promoting promotion whose commit is written ends."""

    def __init__(self, host: Host, writer: GitWriter, status: StatusWriter) -> None:
        self.host = host
        self.writer = writer
        self.status = status

    async def settle(self, body: Body, pipeline: Pipeline) -> None:
        """Finish the promotion if the target has decided it, else fetch and wait."""
        spec, status = body.get("spec") or {}, body.get("status") or {}
        commit = str(status["commit"])
        target = self.host.environment_view(str(spec.get("to")))
        committed = parse_iso(str(status.get("committedAt", ""))) or time.time()
        if target is not None and target.revision and self.writer.is_ancestor(commit, target.revision):
            if target.ok:
                await self.status.finish(
                    body, "Succeeded", f"{spec.get('to')} is Synced and Healthy at {target.revision[:12]}"
                )
                return
            if target.condition == "Stalled":
                await self.status.finish(
                    body,
                    "Failed",
                    f"{spec.get('to')} failed at {target.revision[:12]}: {target.reason}: {target.message}",
                )
                return
        if time.time() - committed > pipeline.timeout:
            await self.status.finish(
                body,
                "Failed",
                f"{spec.get('to')} did not become Synced and Healthy within {pipeline.timeout:.0f} s",
            )
            return
        self.host.request_fetch()
