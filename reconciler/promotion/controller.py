"""The promotion state machine and the operations behind the promotions API: ``PromotionController``,
the facade the daemon and the API use, and the leader's reconcile loop over the units it composes.

Phases: ``Pending`` (waiting for approvals and soak time) → ``Approved`` (gates met, waiting for a
promotion window) → ``Promoting`` (the commit is written, then the target must become Synced and
Healthy at a revision containing it) → ``Succeeded``; or ``Failed``, ``Rejected``, ``Expired``,
``Superseded``.

Any replica answers the API (a Promotion's status is written with optimistic concurrency); only the
leader runs ``reconcile``, which moves phases, writes the Git commit and decides outcomes. Everything
that happens (request, approval, refusal, rejection, commit, outcome) is audited three ways: a
Kubernetes Event on the Promotion, a structured log line, and a metric (``audit``).

The units: ``requests`` (requests, rollbacks) and ``superseding``, ``auto`` (automatic requests),
``decisions`` (approvals and rejections), ``gates`` (expiry, soak, approvals, windows), ``commit``
(the exactly-once Git commit), ``outcome`` (Succeeded or Failed), ``transitions`` (status writes),
``overlay`` (reads of environment overlays), ``approvals`` (approval counting), ``views`` (shared
types).

Exactly-once commit: the commit carries a ``Promotion: <name>`` trailer and is searched for before
writing, so a leader that dies after pushing (or a new leader taking over) finds it instead of
committing again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from reconciler.kube.errors import KubeError
from reconciler.objects import Body
from reconciler.promotion.audit import Auditor, PromotionMetrics
from reconciler.promotion.auto import AutoRequests
from reconciler.promotion.commit import FAULT_VARIABLE, CommitStep
from reconciler.promotion.decisions import Decisions
from reconciler.promotion.gates import Gates
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.outcome import Outcome
from reconciler.promotion.overlay import KUSTOMIZATION_FILES, Overlays
from reconciler.promotion.policy import Pipeline, PromotionSettings
from reconciler.promotion.requests import Requests
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.store import ACTIVE_PHASES, PromotionStore, phase
from reconciler.promotion.superseding import supersede
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import PHASES, EnvView, Host, PromotionError, summary
from reconciler.source.git import GitError

__all__ = [
    "FAULT_VARIABLE",
    "KUSTOMIZATION_FILES",
    "PHASES",
    "EnvView",
    "Host",
    "PromotionController",
    "PromotionError",
    "PromotionMetrics",
    "summary",
]

log = structlog.get_logger(__name__)


class PromotionController:
    """Requests, approvals, rejections, rollbacks, and the leader's reconcile loop."""

    def __init__(
        self,
        settings: PromotionSettings,
        store: PromotionStore,
        writer: GitWriter,
        host: Host,
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.host = host
        self.metrics = PromotionMetrics(registry)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._auditor = Auditor(store, self.metrics)
        self._status = StatusWriter(settings, store, self.metrics, self._auditor)
        overlays = Overlays(host, writer)
        self._requests = Requests(
            settings,
            store,
            writer,
            host,
            overlays=overlays,
            status=self._status,
            auditor=self._auditor,
            wake=self.wake,
        )
        self._auto = AutoRequests(settings, host, overlays, self.request)
        self._decisions = Decisions(settings, store, self.metrics, self._auditor, self.wake)
        self._gates = Gates(settings, store, host, status=self._status, auditor=self._auditor, wake=self.wake)
        self._commits = CommitStep(
            settings, writer, host, overlays=overlays, status=self._status, auditor=self._auditor
        )
        self._outcome = Outcome(host, writer, self._status)
        # with sharding: the pipelines this replica runs are those whose target (and with it their
        # source, which the assignment keeps together) it owns; every pipeline without sharding
        self.owns: Callable[[str], bool] = lambda _environment: True

    def wake(self) -> None:
        """Run the reconcile loop soon."""
        self._wake.set()

    # -- the API's operations ----------------------------------------------------------------------
    async def request(self, call: SignedCall, *, automatic: bool = False) -> Body:
        """Create a promotion from ``payload['from']`` to ``payload['to']`` (optionally at a revision)."""
        return await self._requests.request(call, automatic=automatic)

    async def preview(self, call: SignedCall) -> dict[str, Any]:
        """What a request would commit (its exact diff), creating nothing."""
        return await self._requests.preview(call)

    async def rollback(self, call: SignedCall) -> Body:
        """Create a rollback of ``payload['to']`` to an earlier promotion's values or a revision."""
        return await self._requests.rollback(call)

    async def _create(
        self, pipeline: Pipeline, spec: dict[str, Any], call: SignedCall, *, automatic: bool
    ) -> Body:
        return await self._requests.create(pipeline, spec, call, automatic=automatic)

    async def decide(self, name: str, call: SignedCall, *, approve: bool) -> Body:
        """Record an approval (or a rejection) of promotion ``name`` after every check."""
        return await self._decisions.decide(name, call, approve=approve)

    async def refuse_unsigned(self, name: str, action: str, reason: str) -> None:
        """Audit a decision on ``name`` refused before its signer was known (forged, unsigned, stale)."""
        await self._auditor.refused(name, await self.store.get(name), f"{action} refused: {reason}")

    # -- the leader's loop -------------------------------------------------------------------------
    async def run(self, leading: asyncio.Event, interval: float = 1.0) -> None:
        """Reconcile every ``interval`` seconds (sooner when woken) while leading."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            if not leading.is_set():
                continue
            try:
                await self.reconcile()
            except (KubeError, GitError) as exc:
                log.warning("promotion reconcile failed; retrying", error=str(exc))
            except Exception:  # a bug must not stop every later promotion: log it and go on
                log.exception("promotion reconcile failed unexpectedly; retrying")

    async def reconcile(self) -> None:
        """One pass over every active promotion (and automatic requests)."""
        async with self._lock:
            promotions = await self.store.list()
            self._count_phases(promotions)
            mine = {p.name for p in self.settings.pipelines if self.owns(p.target)}
            superseded: set[str] = set()
            for name in sorted(mine):
                superseded |= await supersede(self._status, promotions, name)
            for body in promotions:
                if body["metadata"]["name"] in superseded:
                    continue
                if not body.get("status"):
                    # being created: the status is written right after the object (a status
                    # subresource ignores it on create), so the next pass sees the whole promotion
                    continue
                # promotions of pipelines this daemon does not run (another daemon's) are left alone
                if phase(body) in ACTIVE_PHASES and (body.get("spec") or {}).get("pipeline") in mine:
                    await self._step(body)
            await self._auto.run(promotions, mine)

    def _count_phases(self, promotions: list[Body]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for body in promotions:
            key = (str((body.get("spec") or {}).get("pipeline", "")), phase(body))
            counts[key] = counts.get(key, 0) + 1
        for pipeline in self.settings.pipelines:
            for name in PHASES:
                self.metrics.phases.labels(pipeline=pipeline.name, phase=name).set(
                    counts.get((pipeline.name, name), 0)
                )

    async def _step(self, body: Body) -> None:
        """Move one active promotion on: its gates while open, then its commit and outcome."""
        spec = body.get("spec") or {}
        name = body["metadata"]["name"]
        pipeline = self.settings.pipeline_named(str(spec.get("pipeline", "")))
        if pipeline is None:
            return
        if phase(body) in ("Pending", "Approved"):
            promoting = await self._gates.advance(body, pipeline)
            if promoting is None:
                return
            body = promoting
        elif phase(body) != "Promoting":
            return
        await self._promote(body, pipeline, name)

    async def _promote(self, body: Body, pipeline: Pipeline, name: str) -> None:
        if not (body.get("status") or {}).get("commit"):
            await self._write_commit(body, pipeline, name)
            return
        await self._outcome.settle(body, pipeline)

    async def _write_commit(self, body: Body, pipeline: Pipeline, name: str) -> None:
        await self._commits.write(body, name)
