"""The Engine: one environment's sync as a straight list of stages, each a unit of its own
(``access``, ``live``, ``validate``, ``apply``, ``health``, ``prune``), plus drift correction
(``correction``). This is the only place where the stages are strung together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from reconciler.drift import FightGuard
from reconciler.health import HealthStatus, aggregate, assess
from reconciler.inventory import Inventory, InventoryStore
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.objects import Action, ChangeSetEntry, Manifest, ObjectKey
from reconciler.plan.diff import scrub, secret_values, unified_diff
from reconciler.plan.ordering import Stage, WaveError, plan_stages
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.sync import ledger
from reconciler.sync.access import AccessCheck, effective_policy
from reconciler.sync.apply import Applier
from reconciler.sync.correction import DriftCorrector, DriftListener
from reconciler.sync.health import HealthWatch
from reconciler.sync.live import LiveState, mark_unchanged, refuse_foreign
from reconciler.sync.outcome import (
    Condition,
    PolicyViolationError,
    Progress,
    Reason,
    SyncFailedError,
    SyncOptions,
    SyncResult,
)
from reconciler.sync.planned import Plan, Planned, crd_kinds, planned_objects, prepare
from reconciler.sync.prune import Pruner
from reconciler.sync.validate import Validator

log = structlog.get_logger(__name__)


def _quiet(_: str) -> None:
    return None


@contextlib.contextmanager
def _timed(result: SyncResult, stage: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        result.durations[stage] = result.durations.get(stage, 0.0) + time.monotonic() - started


class Engine:
    """Syncs environments against one cluster; keeps desired state for drift correction."""

    def __init__(
        self,
        client: KubeClient,
        *,
        inventory: InventoryStore | None = None,
        cache: LiveCache | None = None,
        renderer: Renderer | None = None,
        guard: FightGuard | None = None,
    ) -> None:
        self.client = client
        self.inventory = inventory or InventoryStore(client)
        self.cache = cache
        self.renderer = renderer or Renderer()
        self._locks: dict[str, asyncio.Lock] = {}
        self._running = 0  # syncs in progress (the last one to end stops the health waits' watches)
        self.access = AccessCheck(client, cache)
        self.live = LiveState(client, cache)
        self.validator = Validator(client)
        self.applier = Applier(client)
        self.health = HealthWatch(client, cache)
        self.pruner = Pruner(client)
        self.corrector = DriftCorrector(client, cache, self.lock, guard or FightGuard())

    @property
    def drift_events(self) -> Sequence[ChangeSetEntry]:
        """The most recent drift outcomes (bounded)."""
        return self.corrector.recent

    @property
    def on_drift(self) -> DriftListener | None:
        """Called with (environment, entry) for every drift outcome."""
        return self.corrector.on_drift

    @on_drift.setter
    def on_drift(self, callback: DriftListener | None) -> None:
        self.corrector.on_drift = callback

    def lock(self, environment: str) -> asyncio.Lock:
        """The lock that serializes syncs and drift corrections of one environment."""
        return self._locks.setdefault(environment, asyncio.Lock())

    # -- entry points ----------------------------------------------------------------------------
    async def sync_directory(
        self,
        root: Path,
        environment_path: Path,
        render_options: RenderOptions,
        options: SyncOptions,
        progress: Progress = _quiet,
    ) -> SyncResult:
        """Render ``environment_path`` (inside repository ``root``) and sync it."""
        result = SyncResult(options.environment, options.revision)
        started = time.monotonic()
        try:
            rendered = await self.renderer.render(root, environment_path, render_options)
        except RenderError as exc:
            result.end(Condition.STALLED, Reason.RENDER_FAILED, str(exc))
            result.durations["render"] = time.monotonic() - started
            progress(f"render failed: {exc}; nothing applied, nothing pruned, the previous state stays")
            log.warning(
                "render failed", environment=options.environment, revision=options.revision, error=str(exc)
            )
            return result
        result.durations["render"] = rendered.duration
        result.input_hash = rendered.input_hash
        progress(
            f"rendered {len(rendered.manifests)} objects"
            + (" (cached: inputs unchanged)" if rendered.cached else "")
        )
        return await self.sync(
            list(rendered.manifests), options, progress, result=result, rendered=not rendered.cached
        )

    async def sync(
        self,
        manifests: Sequence[Manifest],
        options: SyncOptions,
        progress: Progress = _quiet,
        *,
        result: SyncResult | None = None,
        rendered: bool = False,
    ) -> SyncResult:
        """Sync already-rendered manifests; see ``reconciler.sync`` for the semantics."""
        result = result or SyncResult(options.environment, options.revision)
        result.rendered = rendered
        structlog.contextvars.bind_contextvars(environment=options.environment, revision=options.revision)
        hidden = secret_values(m.body for m in manifests)
        self.corrector.hide(options.environment, hidden)
        async with self.lock(options.environment):
            self._running += 1
            try:
                await self._sync(manifests, options, progress, result)
            except SyncFailedError as failure:
                if isinstance(failure, PolicyViolationError):
                    result.violations = failure.violations
                result.end(Condition.STALLED, failure.reason, scrub(failure.message, hidden))
                progress(f"{failure.reason}: {result.message}")
            except KubeError as exc:
                reason = Reason.CLUSTER_UNREACHABLE if exc.retryable else Reason.API_ERROR
                result.end(Condition.STALLED, reason, scrub(str(exc), hidden))
                progress(f"{reason}: {result.message}")
            finally:
                self._running -= 1
                if not self._running:
                    await self.health.release()
        if hidden:
            result.changeset.entries = [
                replace(e, message=scrub(e.message, hidden)) if e.message else e
                for e in result.changeset.entries
            ]
        log.info(
            "sync finished",
            condition=str(result.condition),
            reason=str(result.reason),
            health=result.health.value,
            changes=result.changeset.summary(),
        )
        return result

    # -- the pipeline ----------------------------------------------------------------------------
    async def _sync(
        self, manifests: Sequence[Manifest], options: SyncOptions, progress: Progress, result: SyncResult
    ) -> None:
        env = options.environment
        desired = prepare(manifests, env)
        try:
            stages = plan_stages(desired)
        except WaveError as exc:
            raise SyncFailedError(Reason.INVALID_MANIFEST, str(exc)) from None
        previous = await self.inventory.load(env) or Inventory()
        objects = planned_objects(desired, manifests)
        with _timed(result, "plan"):
            await self.access.check(objects, options, self.inventory.namespace)
            new_namespaces = await self.live.load(objects, crd_kinds(desired))
            refuse_foreign(objects, env)
            mark_unchanged(objects, previous, result)
        with _timed(result, "validate"):
            to_write = await self.validator.validate(objects, new_namespaces, options, result)
        progress(_validated(objects, to_write))
        if options.dry_run:
            await self._dry_run(objects, previous, options, result, progress)
            return
        inventory = await ledger.before(self.inventory, env, previous, objects)
        self.corrector.remember(env, (p.manifest for p in objects.values()), options.revision)
        applied = {key: p.hash for key, p in objects.items() if not p.writes}
        try:
            await self._apply(stages, objects, options, result, progress, applied)
        finally:
            inventory = await ledger.applied(self.inventory, env, inventory, objects, applied)
        with _timed(result, "prune"):
            policy = effective_policy(options, self.inventory.namespace)
            keep = await self.pruner.prune(previous, set(objects), options, policy, result, progress)
        result.inventory_size = await ledger.final(
            self.inventory, env, (inventory, previous), objects, applied, keep, options.revision
        )
        await self._conclude(objects, to_write, options, result, progress)

    async def _apply(
        self,
        stages: Sequence[Stage],
        objects: Planned,
        options: SyncOptions,
        result: SyncResult,
        progress: Progress,
        applied: dict[ObjectKey, str],
    ) -> None:
        """Every stage in order (objects of CRDs new in this sync validated once the CRDs exist), each
        waited on until healthy when it wrote something."""
        started = time.monotonic()
        try:
            pending = [p for p in objects.values() if p.plan is Plan.WRITE_AFTER_CRD]
            for stage in stages:
                if pending and stage.name != "cluster-definitions":
                    await self.validator.validate_after_crds(pending, options, result)
                    progress(f"validated {len(pending)} objects that needed new namespaces or CRDs")
                    pending = []
                in_stage = [objects[m.key] for m in stage.manifests]
                if not any(p.writes for p in in_stage):
                    continue
                clock = time.monotonic()
                written = await self.applier.apply_stage(
                    stage, in_stage, options.concurrency, result, applied, options.diffs
                )
                progress(f"stage {stage.name}: applied {len(written)} objects")
                if stage.wait and options.wait:
                    with _timed(result, "health"):
                        healthy = await self.health.wait(
                            stage.name, stage.manifests, options.health_timeout, _applied_versions(objects)
                        )
                    progress(f"stage {stage.name}: {len(healthy)} objects healthy")
                result.durations[f"stage {stage.name}"] = time.monotonic() - clock
        finally:
            result.durations["apply"] = time.monotonic() - started - result.durations.get("health", 0.0)

    async def _dry_run(
        self,
        objects: Planned,
        previous: Inventory,
        options: SyncOptions,
        result: SyncResult,
        progress: Progress,
    ) -> None:
        """What a sync would do, as a ChangeSet with diffs; nothing written."""
        to_write = [p for p in objects.values() if p.writes]
        for planned in to_write:
            action = Action.CREATED if planned.live is None else Action.CONFIGURED
            after = planned.dry_run if planned.dry_run is not None else planned.manifest.body
            result.changeset.add(
                ChangeSetEntry(planned.key, action, unified_diff(planned.key, planned.live, after))
            )
        policy = effective_policy(options, self.inventory.namespace)
        await self.pruner.prune(previous, set(objects), options, policy, result, progress)
        result.synced = not to_write and not (previous.keys - set(objects))
        result.end(Condition.READY, Reason.DRY_RUN, f"dry run: {result.changeset.summary()}")

    async def _conclude(
        self,
        objects: Planned,
        to_write: Sequence[object],
        options: SyncOptions,
        result: SyncResult,
        progress: Progress,
    ) -> None:
        """Health of everything, and the environment's condition. What this sync did not write and was
        healthy when the plan stage read it is taken from that read (no second pass, no request); the
        rest is read again, or waited for (a one-shot sync): the wait's verdicts are the health then."""
        healths = {key: assess(p.live) for key, p in objects.items() if not p.writes}
        again = [objects[key].manifest for key in objects if objects[key].writes or not healths[key].ready]
        with _timed(result, "health"):
            if again and options.wait and options.wait_for_all:
                try:
                    healths.update(
                        await self.health.wait(
                            "all objects", again, options.health_timeout, _applied_versions(objects)
                        )
                    )
                    again = []
                except SyncFailedError as failure:
                    progress(failure.message)
            if again:
                healths.update(await self.health.healths(again, _applied_versions(objects)))
        result.health = aggregate(healths.values())
        result.unhealthy = {
            str(k): f"{h.status.value}: {h.message}" for k, h in healths.items() if not h.ready
        }
        for planned in objects.values():
            if planned.writes:
                self.corrector.guard.reset(planned.key)
        result.synced = not result.prune_blocked
        if result.prune_blocked:
            result.end(Condition.STALLED, Reason.PRUNE_BLOCKED, result.prune_blocked)
        elif result.health in (HealthStatus.HEALTHY, HealthStatus.SUSPENDED):
            revision = options.revision or "(working tree)"
            result.end(
                Condition.READY,
                Reason.SUCCEEDED,
                f"applied revision {revision}: {result.changeset.summary()}",
            )
        else:
            result.end(
                Condition.RECONCILING, Reason.PROGRESSING, f"{len(result.unhealthy)} objects not healthy yet"
            )
        progress(f"{result.condition}: {result.message}")

    async def close(self) -> None:
        """Wait for in-flight drift corrections."""
        await self.corrector.close()


def _applied_versions(objects: Planned) -> dict[ObjectKey, tuple[int, int]]:
    """The versions this sync's applies answered with (see ``HealthWatch``)."""
    return {key: p.applied_version for key, p in objects.items() if p.applied_version is not None}


def _validated(objects: Planned, to_write: Sequence[object]) -> str:
    """The progress line of the validate stage."""
    dry_run = sum(1 for p in objects.values() if p.dry_run is not None or p.plan is Plan.RECREATE)
    line = (
        f"validated {dry_run} objects by server-side dry-run; "
        f"{len(to_write)} to apply, {len(objects) - len(to_write)} unchanged"
    )
    if any(p.plan is Plan.WRITE_IN_NEW_NAMESPACE for p in objects.values()):
        line += "; objects in new namespaces were validated in a stand-in namespace"
    if any(p.plan is Plan.WRITE_AFTER_CRD for p in objects.values()):
        line += "; custom resources of new CRDs are validated once their CRDs are established"
    return line
