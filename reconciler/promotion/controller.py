"""The promotion state machine and the operations behind the promotions API.

Phases: ``Pending`` (waiting for approvals and soak time) → ``Approved`` (gates met, waiting for a
promotion window) → ``Promoting`` (the commit is written, then the target must become Synced and
Healthy at a revision containing it) → ``Succeeded``; or ``Failed``, ``Rejected``, ``Expired``,
``Superseded``.

Any replica answers the API (a Promotion's status is written with optimistic concurrency); only the
leader runs ``reconcile``, which moves phases, writes the Git commit and decides outcomes. Everything
that happens (request, approval, refusal, rejection, commit, outcome) is audited three ways: a
Kubernetes Event on the Promotion, a structured log line, and a metric.

Exactly-once commit: the commit carries a ``Promotion: <name>`` trailer and is searched for before
writing, so a leader that dies after pushing (or a new leader taking over) finds it instead of
committing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.kube.errors import KubeError
from reconciler.objects import Body
from reconciler.promotion import edit
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.policy import Pipeline, PromotionSettings, counted_approvals, window_verdict
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.store import (
    ACTIVE_PHASES,
    OPEN_PHASES,
    TERMINAL_PHASES,
    PromotionStore,
    new_name,
    now_iso,
    order,
    parse_iso,
    phase,
)
from reconciler.refusal import Refusal
from reconciler.server.app import DeliveryLog
from reconciler.source.git import GitError

log = structlog.get_logger(__name__)
PHASES = ("Pending", "Approved", "Promoting", *TERMINAL_PHASES)
# Set to "promotion-after-push" (tests only) to SIGKILL the daemon right after a promotion commit is
# pushed and before it is recorded: the restart must find the commit instead of writing a second one.
FAULT_VARIABLE = "RECONCILER_FAULT_INJECTION"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


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


def _kustomization(path: str, exists: Any) -> str:
    for name in KUSTOMIZATION_FILES:
        candidate = f"{path.rstrip('/')}/{name}"
        if exists(candidate):
            return candidate
    return f"{path.rstrip('/')}/kustomization.yaml"


def _succeeded(promotions: list[Body], pipeline: Pipeline, kind: str = "") -> list[Body]:
    """The Succeeded promotions of ``pipeline`` (of type ``kind`` when given), oldest first."""
    return [
        p
        for p in promotions
        if (p.get("spec") or {}).get("pipeline") == pipeline.name
        and (not kind or p["spec"].get("type") == kind)
        and phase(p) == "Succeeded"
    ]


def _open(body: Body) -> bool:
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
        # recently used nonces (bounded), besides the ones stored in each Promotion
        self._nonces = DeliveryLog(size=8192)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._auto_errors: dict[str, str] = {}  # pipeline -> the last automatic request's refusal

    # -- audit ---------------------------------------------------------------------------------------
    async def _audit(
        self, body: Body, event: str, message: str, *, warning: bool = False, **fields: Any
    ) -> None:
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

    async def _refused(self, name: str, body: Body | None, message: str, **fields: Any) -> None:
        """Audit a refused decision: on the Promotion when it exists, else in the log alone."""
        pipeline = str(((body or {}).get("spec") or {}).get("pipeline", "unknown"))
        self.metrics.approvals.labels(pipeline=pipeline, result="refused").inc()
        if body is not None:
            await self._audit(body, "Refused", message, warning=True, **fields)
        else:
            log.warning(
                "promotion Refused", promotion_event="Refused", promotion=name, message=message, **fields
            )

    async def refuse_unsigned(self, name: str, action: str, reason: str) -> None:
        """Audit a decision on ``name`` refused before its signer was known (forged, unsigned, stale)."""
        await self._refused(name, await self.store.get(name), f"{action} refused: {reason}")

    def wake(self) -> None:
        """Run the reconcile loop soon."""
        self._wake.set()

    # -- requests --------------------------------------------------------------------------------------
    def _refuse_replay(self, nonce: str, promotions: list[Body]) -> None:
        """Refuse a request whose nonce this replica saw recently or any stored promotion holds."""
        stored = any(
            (body.get("spec") or {}).get("requestNonce") == nonce
            or nonce in ((body.get("status") or {}).get("nonces") or [])
            for body in promotions
        )
        if self._nonces.seen(nonce) or stored:
            raise PromotionError(409, "this request was already received (replayed nonce)")

    async def request(self, call: SignedCall, *, automatic: bool = False) -> Body:
        """Create a promotion from ``payload['from']`` to ``payload['to']`` (optionally at a revision)."""
        payload = call.payload
        source, target = str(payload.get("from", "")), str(payload.get("to", ""))
        pipeline = self.settings.pipeline(source, target)
        if pipeline is None:
            raise PromotionError(404, f"no promotion pipeline from {source!r} to {target!r}")
        promotions = await self.store.list()
        if not automatic:
            self._refuse_replay(call.nonce, promotions)
        view = self.host.environment_view(source)
        # a follower replica does not sync: it knows the fetched head, not what the source runs
        current = view.revision if view is not None and view.revision else self.host.head_revision()
        revision = str(payload.get("revision") or current)
        if not revision:
            raise PromotionError(409, "the repository has not been fetched yet: nothing to promote")
        if len(revision) != 40 or not self.writer.is_ancestor(revision, revision):
            raise PromotionError(
                404, f"revision {revision[:40]!r} is not a full commit id the repository holds"
            )
        if view is not None and view.input_key and revision == view.revision:
            input_key = view.input_key
        else:
            input_key = await self.host.input_key_at(source, revision)
        source_env = self._env_path(source)
        images, files = await asyncio.to_thread(self._promoted_values, pipeline, source_env, revision)
        await asyncio.to_thread(self._preflight, target, images, False)
        done = _succeeded(promotions, pipeline, "Promotion")
        base = str(done[-1]["spec"].get("sourceRevision", "")) if done else ""
        authors = await asyncio.to_thread(self.writer.authors, source_env, base, revision)
        spec = {
            "pipeline": pipeline.name,
            "from": source,
            "to": target,
            "type": "Promotion",
            "sourceRevision": revision,
            "sourceInputKey": input_key,
            "requestedBy": call.identity,
            "requestNonce": call.nonce,
            "requiredApprovals": pipeline.approvals,
            "images": images,
            "files": files,
            "authors": authors,
        }
        return await self._create(pipeline, spec, call, automatic=automatic)

    async def rollback(self, call: SignedCall) -> Body:
        """Create a rollback of ``payload['to']`` to an earlier promotion's values or a revision."""
        payload = call.payload
        target = str(payload.get("to", ""))
        pipeline = self.settings.pipeline_to(target)
        if pipeline is None:
            raise PromotionError(404, f"no promotion pipeline leads to {target!r}")
        promotions = await self.store.list()
        self._refuse_replay(call.nonce, promotions)
        view = self.host.environment_view(target)
        head = view.revision if view is not None and view.revision else self.host.head_revision()
        if view is None or not head:
            raise PromotionError(409, "the repository has not been fetched yet")
        wanted = str(payload.get("target") or "")
        images: list[dict[str, str]]
        if wanted and any(p["metadata"]["name"] == wanted for p in promotions):
            chosen = next(p for p in promotions if p["metadata"]["name"] == wanted)
            images = list((chosen.get("spec") or {}).get("images") or [])
            what = f"the values promoted by {wanted}"
        elif wanted:
            if not self.writer.is_ancestor(wanted, head):
                raise PromotionError(
                    404, f"{wanted!r} is neither a promotion nor a revision of {target}'s history"
                )
            text = await asyncio.to_thread(self._kustomization_text, self._env_path(target), wanted)
            if text is None:
                raise PromotionError(404, f"{target} has no kustomization at {wanted[:12]}")
            images = edit.read_images(text)
            what = f"the images at {wanted[:12]}"
        else:
            done = [p for p in _succeeded(promotions, pipeline) if p["status"].get("previousImages")]
            if not done:
                raise PromotionError(409, f"no succeeded promotion into {target} to roll back")
            images = list(done[-1]["status"]["previousImages"])
            what = f"the images before {done[-1]['metadata']['name']}"
        if not images:
            raise PromotionError(409, f"nothing to restore: {what} has no images")
        await asyncio.to_thread(self._preflight, target, images, True)
        spec = {
            "pipeline": pipeline.name,
            "from": target,
            "to": target,
            "type": "Rollback",
            "sourceRevision": head,
            "sourceInputKey": view.input_key,
            "requestedBy": call.identity,
            "requestNonce": call.nonce,
            "rollbackOf": wanted or what,
            "requiredApprovals": pipeline.rollback.approvals,
            "images": images,
            "files": [],
            "authors": [],
        }
        return await self._create(pipeline, spec, call, automatic=False)

    async def _create(
        self, pipeline: Pipeline, spec: dict[str, Any], call: SignedCall, *, automatic: bool
    ) -> Body:
        name = new_name(pipeline.name)
        required = int(spec["requiredApprovals"])
        status = {
            "phase": "Pending",
            "message": f"waiting for {required} approval(s)",
            "shortRevision": str(spec["sourceRevision"])[:12],
            "approvalSummary": f"0/{required}",
            "approvals": [],
            "rejections": [],
            "nonces": [] if automatic else [call.nonce],
        }
        body = await self.store.create(spec, status, name)
        kind = "rollback" if spec["type"] == "Rollback" else "promotion"
        await self._audit(
            body,
            "Requested",
            f"{kind} {spec['from']} → {spec['to']} at {str(spec['sourceRevision'])[:12]} requested by "
            f"{call.identity}" + (" (automatic)" if automatic else ""),
            identity=call.identity,
        )
        await self._supersede(await self.store.list(), pipeline.name)
        self.wake()
        # as it is now: Superseded when a request newer than this one was seen (by this replica or
        # another); a newer one not created yet will supersede it later
        return await self.store.get(name) or body

    async def _supersede(self, promotions: list[Body], pipeline: str) -> set[str]:
        """Leave at most one open (Pending or Approved) promotion of ``pipeline``: the newest.

        "Newest" is the order every replica agrees on (``store.order``: creationTimestamp, then the
        creating replica's request time, then the name). Each request lists after its create and
        supersedes every open promotion of the pipeline but the newest it sees, its own included; the
        last of any set of simultaneous requests to list sees them all, so exactly the newest survives
        whatever the interleaving, on any number of replicas. The leader's pass applies the same rule
        (a replica may die between its create and its list). Returns the names it finished."""
        candidates = sorted(
            (p for p in promotions if (p.get("spec") or {}).get("pipeline") == pipeline and _open(p)),
            key=order,
        )
        finished: set[str] = set()
        if len(candidates) < 2:
            return finished
        newest = candidates[-1]["metadata"]["name"]
        for other in candidates[:-1]:
            if await self._finish(other, "Superseded", f"superseded by {newest}", only=OPEN_PHASES):
                finished.add(other["metadata"]["name"])
        return finished

    def _env_path(self, name: str) -> str:
        view = self.host.environment_view(name)
        if view is None:
            raise PromotionError(404, f"no environment named {name!r}")
        return view.path

    def _kustomization_text(self, env_path: str, revision: str) -> str | None:
        path = _kustomization(env_path, lambda p: self.writer.show(revision, p) is not None)
        return self.writer.show(revision, path)

    def _preflight(self, target: str, images: list[dict[str, str]], restore: bool) -> None:
        """Refuse a request whose values the target overlay, as it is now, cannot take (a digest pin
        and a tag-only source, a key in another case...), before anyone approves it. The commit checks
        again against the target as it is then."""
        view = self.host.environment_view(target)
        if view is None or not images:
            return
        revision = self.host.head_revision() or view.revision  # the commit lands on the branch head
        if not revision:
            return
        text = self._kustomization_text(view.path, revision)
        if text is None:
            return
        try:
            edit.apply(text, images, f"{view.path}/kustomization.yaml", restore=restore)
        except edit.EditError as exc:
            raise PromotionError(409, f"{target} cannot take these values: {exc}") from None

    def _promoted_values(
        self, pipeline: Pipeline, env_path: str, revision: str
    ) -> tuple[list[dict[str, str]], list[str]]:
        images: list[dict[str, str]] = []
        if pipeline.images:
            text = self._kustomization_text(env_path, revision)
            if text is None:
                raise PromotionError(409, f"{env_path} has no kustomization at {revision[:12]}")
            try:
                images = edit.read_images(text, f"{env_path}/kustomization.yaml")
            except edit.EditError as exc:
                raise PromotionError(409, str(exc)) from None
        for file in pipeline.files:
            if self.writer.show(revision, f"{env_path}/{file}") is None:
                raise PromotionError(409, f"{env_path}/{file} does not exist at {revision[:12]}")
        if not images and not pipeline.files:
            raise PromotionError(409, f"{env_path} has no images: entries to promote")
        return images, list(pipeline.files)

    # -- approvals -------------------------------------------------------------------------------------
    async def decide(self, name: str, call: SignedCall, *, approve: bool) -> Body:
        """Record an approval (or a rejection) of promotion ``name`` after every check."""
        record = {
            "identity": call.identity,
            "revision": str(call.payload.get("revision", "")),
            "at": now_iso(),
            "via": call.key_id,
            "nonce": call.nonce,
            "comment": str(call.payload.get("comment", ""))[:500],
        }
        problem: list[PromotionError] = []

        def mutate(fresh: Body) -> bool:
            try:
                self._check_decision(fresh, name, call, approve=approve)
            except PromotionError as exc:
                problem.append(exc)
                return False
            status = fresh["status"]
            status.setdefault("nonces", []).append(call.nonce)
            if approve:
                status.setdefault("approvals", []).append(record)
                self._refresh_summary(fresh)
            else:
                status.setdefault("rejections", []).append(record)
                status["phase"] = "Rejected"
                status["finishedAt"] = now_iso()
                status["message"] = f"rejected by {call.identity}" + (
                    f": {record['comment']}" if record["comment"] else ""
                )
            return True

        # checked on the fresh object inside the write, so a concurrent decision is never lost or doubled
        stored = await self.store.update_status(name, mutate)
        if stored is None:
            problem.append(PromotionError(404, f"no promotion named {name!r}"))
        if problem:
            message = f"{call.action} by {call.identity} (key {call.key_id}) refused: {problem[0].reason}"
            await self._refused(name, stored, message, identity=call.identity)
            raise problem[0]
        assert stored is not None
        pipeline_name = str(stored["spec"].get("pipeline", "unknown"))
        self.metrics.approvals.labels(
            pipeline=pipeline_name, result="accepted" if approve else "rejected"
        ).inc()
        if approve:
            await self._audit(
                stored,
                "ApprovalReceived",
                f"approved by {call.identity} (key {call.key_id}); "
                f"{stored['status'].get('approvalSummary', '')} approvals",
                identity=call.identity,
            )
        else:
            await self._audit(
                stored, "Rejected", stored["status"]["message"], warning=True, identity=call.identity
            )
        self.wake()
        return stored

    def _excluded(self, body: Body) -> list[str]:
        spec = body.get("spec") or {}
        pipeline = self.settings.pipeline_named(str(spec.get("pipeline", "")))
        if pipeline is not None and pipeline.allow_self_approval:
            return []
        return [str(spec.get("requestedBy", "")), *[str(a) for a in spec.get("authors") or []]]

    def _check_decision(self, body: Body, name: str, call: SignedCall, *, approve: bool) -> None:
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
        pipeline = self.settings.pipeline_named(str(spec.get("pipeline", "")))
        if pipeline is None:
            raise PromotionError(409, f"pipeline {spec.get('pipeline')!r} is no longer configured")
        if not self.settings.may_approve(pipeline, call.identity):
            raise PromotionError(
                403, f"{call.identity} is not on the approver list of pipeline {pipeline.name}"
            )
        if approve and call.identity.lower() in {e.lower() for e in self._excluded(body)}:
            raise PromotionError(
                403,
                f"{call.identity} requested or authored what is promoted and cannot approve it "
                "(no self-approval)",
            )
        status = body.get("status") or {}
        if call.nonce in (status.get("nonces") or []):
            raise PromotionError(409, "this decision was already received (replayed nonce)")
        if approve and any(a.get("identity") == call.identity for a in status.get("approvals") or []):
            raise PromotionError(409, f"{call.identity} has already approved {name}")

    def _refresh_summary(self, body: Body) -> int:
        spec, status = body.get("spec") or {}, body["status"]
        counted = counted_approvals(
            status.get("approvals") or [], str(spec.get("sourceRevision")), self._excluded(body)
        )
        status["approvalSummary"] = f"{len(counted)}/{spec.get('requiredApprovals', 1)}"
        return len(counted)

    # -- the leader's loop -----------------------------------------------------------------------------
    async def run(self, leading: asyncio.Event, interval: float = 1.0) -> None:
        """Reconcile every ``interval`` seconds (sooner when woken) while leading."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
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
            counts: dict[tuple[str, str], int] = {}
            for body in promotions:
                key = (str((body.get("spec") or {}).get("pipeline", "")), phase(body))
                counts[key] = counts.get(key, 0) + 1
            for pipeline in self.settings.pipelines:
                for name in PHASES:
                    self.metrics.phases.labels(pipeline=pipeline.name, phase=name).set(
                        counts.get((pipeline.name, name), 0)
                    )
            mine = {p.name for p in self.settings.pipelines}
            superseded: set[str] = set()
            for pipeline in self.settings.pipelines:
                superseded |= await self._supersede(promotions, pipeline.name)
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
            await self._auto_requests(promotions)

    async def _auto_requests(self, promotions: list[Body]) -> None:
        for pipeline in self.settings.pipelines:
            if not pipeline.auto_request:
                continue
            view = self.host.environment_view(pipeline.source)
            if view is None or not view.ok or not view.input_key:
                continue
            if any(
                (p.get("spec") or {}).get("pipeline") == pipeline.name
                and (p.get("spec") or {}).get("sourceInputKey") == view.input_key
                for p in promotions
            ):
                continue
            target = self.host.environment_view(pipeline.target)
            try:
                images, _ = await asyncio.to_thread(self._promoted_values, pipeline, view.path, view.revision)
                if target is not None and target.revision and pipeline.images and not pipeline.files:
                    text = await asyncio.to_thread(self._kustomization_text, target.path, target.revision)
                    current = edit.read_images(text) if text is not None else None
                    if current is not None and edit.merge_images(current, images) == current:
                        continue  # the target already runs these images
                call = SignedCall(
                    identity="reconciler",
                    key_id="reconciler",
                    via_integration=True,
                    action="request",
                    nonce=f"auto-{pipeline.name}-{view.input_key[:32]}",
                    timestamp=time.time(),
                    payload={"from": pipeline.source, "to": pipeline.target, "revision": view.revision},
                )
                await self.request(call, automatic=True)
            except (PromotionError, edit.EditError) as exc:
                if self._auto_errors.get(pipeline.name) != str(exc):  # once, not on every pass
                    log.warning("automatic promotion request failed", pipeline=pipeline.name, error=str(exc))
                self._auto_errors[pipeline.name] = str(exc)
            else:
                self._auto_errors.pop(pipeline.name, None)

    async def _finish(
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
        created = parse_iso(str(body["metadata"].get("creationTimestamp", "")))
        pipeline = str((body.get("spec") or {}).get("pipeline", ""))
        if final in ("Succeeded", "Failed") and created:
            self.metrics.duration.labels(pipeline=pipeline, outcome=final).observe(
                max(0.0, time.time() - created)
            )
        await self._audit(stored, final, message, warning=final not in ("Succeeded", "Superseded") or warning)
        return True

    async def _set(self, body: Body, *, summary: bool = False, **fields: Any) -> Body:
        """Write ``fields`` into the status (and, with ``summary``, the approval count of the fresh
        object); never over a terminal phase."""

        def mutate(fresh: Body) -> bool:
            if phase(fresh) in TERMINAL_PHASES:
                return False
            before = fresh["status"].get("approvalSummary")
            if summary:
                self._refresh_summary(fresh)
            changed = {k: v for k, v in fields.items() if fresh["status"].get(k) != v}
            fresh["status"].update(changed)
            return bool(changed) or fresh["status"].get("approvalSummary") != before

        return await self.store.update_status(body["metadata"]["name"], mutate) or body

    def _waiting(
        self, body: Body, source: EnvView | None, now: float, soak: float, *, rollback: bool
    ) -> list[str]:
        """What a Pending promotion still waits for (approvals, the source's health, soak time)."""
        spec = body.get("spec") or {}
        waiting: list[str] = []
        counted = self._refresh_summary(body)
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
            waiting = self._waiting(fresh, source, now, soak, rollback=rollback)
            if not waiting:
                self.wake()  # every gate is met now: the next pass moves it on
                return bool(before[2] != status.get("approvalSummary"))
            # an Approved promotion whose source regressed goes back to Pending until it recovers
            status.update(phase="Pending", message="waiting for " + "; ".join(waiting))
            return bool(before != (status["phase"], status["message"], status["approvalSummary"]))

        await self.store.update_status(body["metadata"]["name"], mutate)

    async def _step(self, body: Body) -> None:
        spec = body.get("spec") or {}
        name = body["metadata"]["name"]
        pipeline = self.settings.pipeline_named(str(spec.get("pipeline", "")))
        if pipeline is None:
            return
        now = time.time()
        current = phase(body)
        if current in ("Pending", "Approved"):
            created = parse_iso(str(body["metadata"].get("creationTimestamp", "")))
            if created and now - created > pipeline.expire_after:
                await self._finish(
                    body, "Expired", f"not approved within {pipeline.expire_after:.0f} s", only=OPEN_PHASES
                )
                return
            rollback = spec.get("type") == "Rollback"
            source = self.host.environment_view(str(spec.get("from")))
            if (
                not rollback
                and source is not None
                and source.input_key
                and source.input_key != spec.get("sourceInputKey")
            ):
                await self._finish(
                    body,
                    "Superseded",
                    f"{spec.get('from')} moved on to {source.revision[:12]}: request again",
                    only=OPEN_PHASES,
                )
                return
            soak = pipeline.rollback.soak if rollback else pipeline.soak
            if self._waiting(body, source, now, soak, rollback=rollback):
                await self._update_pending(body, source, now, soak, rollback=rollback)
                return
            open_, why = window_verdict(pipeline.windows, dt.datetime.now(dt.UTC))
            message = (
                "approved; writing the commit"
                if open_
                else f"approved; waiting for a promotion window: {why}"
            )
            if current == "Pending":
                # phase and message in one write: a reader never sees Approved with a stale message
                body = await self._set(
                    body, summary=True, phase="Approved", approvedAt=now_iso(), message=message
                )
                if phase(body) != "Approved":
                    return  # finished (superseded, rejected, expired) since this pass listed it
                approvers = counted_approvals(
                    body["status"].get("approvals") or [],
                    str(spec.get("sourceRevision")),
                    self._excluded(body),
                )
                await self._audit(body, "Approved", f"approved by {', '.join(approvers)}")
            if not open_:
                await self._set(body, message=message)
                return
            body = await self._set(
                body, phase="Promoting", promotingAt=now_iso(), message="writing the commit"
            )
            if phase(body) != "Promoting":
                return  # finished since this pass listed it: never commit a superseded promotion
            current = "Promoting"
        if current == "Promoting":
            await self._promote(body, pipeline, name)

    async def _promote(self, body: Body, pipeline: Pipeline, name: str) -> None:
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if not status.get("commit"):
            await self._write_commit(body, pipeline, name)
            return
        commit = str(status["commit"])
        target = self.host.environment_view(str(spec.get("to")))
        committed = parse_iso(str(status.get("committedAt", ""))) or time.time()
        if target is not None and target.revision and self.writer.is_ancestor(commit, target.revision):
            if target.ok:
                await self._finish(
                    body, "Succeeded", f"{spec.get('to')} is Synced and Healthy at {target.revision[:12]}"
                )
                return
            if target.condition == "Stalled":
                await self._finish(
                    body,
                    "Failed",
                    f"{spec.get('to')} failed at {target.revision[:12]}: {target.reason}: {target.message}",
                )
                return
        if time.time() - committed > pipeline.timeout:
            await self._finish(
                body,
                "Failed",
                f"{spec.get('to')} did not become Synced and Healthy within {pipeline.timeout:.0f} s",
            )
            return
        self.host.request_fetch()

    async def _write_commit(self, body: Body, pipeline: Pipeline, name: str) -> None:
        spec = body.get("spec") or {}
        target_path = self._env_path(str(spec.get("to")))
        source_path = self._env_path(str(spec.get("from")))
        images = [dict(i) for i in spec.get("images") or []]
        files = [str(f) for f in spec.get("files") or []]
        revision = str(spec.get("sourceRevision", ""))
        rollback = spec.get("type") == "Rollback"  # the target's own earlier values: set exactly
        previous: list[dict[str, str]] = []

        def apply_edit(work: Path) -> list[str]:
            changed: list[str] = []
            kustomization = _kustomization(target_path, lambda p: (work / p).is_file())
            if images:
                path = work / kustomization
                # bytes, not text mode: a CRLF file stays CRLF (text mode would rewrite every line)
                try:
                    text = path.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    raise edit.EditError(f"{kustomization}: not UTF-8") from None
                result, current, _ = edit.apply(text, images, kustomization, restore=rollback)
                previous[:] = current
                if result != text:
                    path.write_bytes(result.encode("utf-8"))
                    changed.append(kustomization)
            for file in files:
                content = self.writer.show(revision, f"{source_path}/{file}")
                if content is None:
                    raise edit.EditError(f"{source_path}/{file} does not exist at {revision[:12]}")
                destination = work / target_path / file
                if not destination.exists() or destination.read_text(encoding="utf-8") != content:
                    destination.write_text(content, encoding="utf-8")
                    changed.append(f"{target_path}/{file}")
            return changed

        approvers = counted_approvals(body["status"].get("approvals") or [], revision, self._excluded(body))
        kind = "Roll back" if spec.get("type") == "Rollback" else "Promote"
        what = ", ".join(
            f"{i['name']}:{i.get('newTag') or i.get('digest') or i.get('newName', '')}" for i in images
        ) or ", ".join(files)
        lines = [
            f"{kind} {spec.get('from')}@{revision[:12]} to {spec.get('to')}: {what}"[:200],
            "",
            f"Requested by {spec.get('requestedBy')}.",
            "",
            f"Promoted-From: {spec.get('from')}@{revision}",
            *[f"Approved-By: {a}" for a in approvers],
            f"Promotion: {name}",
        ]
        try:
            sha, created = await self.writer.commit_async(name, apply_edit, "\n".join(lines) + "\n")
        except edit.EditError as exc:
            await self._finish(body, "Failed", f"the target overlay cannot be edited: {exc}")
            return
        except GitError as exc:
            await self._set(body, message=f"commit failed, retrying: {exc}")
            await self._audit(body, "CommitRetry", str(exc), warning=True)
            return
        if created and os.environ.get(FAULT_VARIABLE) == "promotion-after-push":
            # fault injection for the crash tests: die between the push and recording it
            log.warning("fault injection: killing the daemon after the promotion push", commit=sha)
            os.kill(os.getpid(), signal.SIGKILL)
        if not sha:
            sha = await asyncio.to_thread(self.writer.find_head)
            note = f"{spec.get('to')} already holds the promoted values; no commit needed"
        else:
            note = f"committed {sha[:12]}" + ("" if created else " (found the commit already pushed)")
        fields: dict[str, Any] = {
            "commit": sha,
            "committedAt": now_iso(),
            "message": note + "; waiting for the sync",
        }
        if previous:
            fields["previousImages"] = previous
        body = await self._set(body, **fields)
        await self._audit(body, "Committed", note, commit=sha)
        self.host.request_fetch()
