"""One environment's sync step (the work item ``env:<name>``): held back while a ``depends_on``
environment is not Ready, run through the environment's engine with its options, then recorded in the
environment's state and reported; failures worth retrying are raised for the queue's backoff."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from reconciler.envstatus import next_conditions, now_rfc3339
from reconciler.kube import fencing
from reconciler.plan.prune import PruneOptions
from reconciler.promotion.controller import PromotionController
from reconciler.settings import EnvironmentConfig, Settings
from reconciler.sync import Condition, Engine, Reason, SyncOptions, SyncResult
from reconciler.sync.correction import NotPermittedError, Permit, always_permitted
from reconciler.tenancy import AccessPolicy
from reconciler.workqueue import WorkQueue

from .environment import EnvironmentState, engine_key, render_options
from .fetching import Head
from .reporting import Reporter

log = structlog.get_logger("reconciler.daemon")


class Syncer:
    """Runs the sync of one environment at the fetched revision (only while leading)."""

    def __init__(
        self,
        settings: Settings,
        kustomize: Path,
        environments: dict[str, EnvironmentState],
        engines: dict[str, Engine],
        head: Head,
        queue: WorkQueue,
        leading: asyncio.Event,
        reporter: Reporter,
        promotions: Callable[[], PromotionController | None],
        unreachable: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.kustomize = kustomize
        self.environments = environments
        self.engines = engines  # by engine_key, filled at startup
        self.head = head
        self.queue = queue
        self.leading = leading
        self.reporter = reporter
        self.promotions = promotions
        self.unreachable = unreachable  # why a cluster cannot be used now ("" when it answers)
        # with sharding: which environments this replica syncs, and the permit (claim + write fence)
        # a sync, its status write and its Events run under
        self.owns: Callable[[str], bool] = lambda _name: True
        self.permit: Permit = always_permitted

    async def sync(self, name: str) -> None:
        """Sync ``name`` at the fetched revision, record and report the result, queue what follows."""
        state = self.environments.get(name)
        if state is None or self.head.snapshot is None or not self.leading.is_set() or not self.owns(name):
            return
        try:
            async with self.permit(name):
                result = await self._sync(state)
        except NotPermittedError as exc:
            # another replica owns it now, or still holds its claim (finishing its last sync): retried
            # as soon as that claim is released, or once it could have expired
            retry = getattr(exc, "retry_after", 0.0)
            log.info("sync not run by this replica", environment=name, reason=str(exc), retry_in=retry)
            if retry and self.owns(name):
                self.queue.add_after(f"env:{name}", retry)
            return
        if result is not None:
            self._follow_up(name, result)

    async def _sync(self, state: EnvironmentState) -> SyncResult | None:
        """The sync itself, under the environment's permit; None when held back by a dependency."""
        name = state.config.name
        if await self._held_back(state) or self.head.snapshot is None:
            return None
        snapshot, revision = self.head.snapshot, self.head.revision
        # every log line of this reconcile carries the environment, the revision and a reconcile id
        context = {"environment": name, "revision": revision, "reconcile_id": f"{name}-{os.urandom(4).hex()}"}
        result, elapsed = await self._run(state, snapshot, revision, context)
        fence = fencing.current()
        if fence is not None:
            fence.ensure()  # a sync that lost its claim on the way leaves nothing behind
        await self._record(state, result, revision)
        with structlog.contextvars.bound_contextvars(**context):
            await self.reporter.after_sync(state, result, elapsed)
        return result

    async def _held_back(self, state: EnvironmentState) -> bool:
        """True (and said so once) while a ``depends_on`` environment is not Ready."""
        unmet = self._unmet_dependencies(state)
        if not unmet:
            state.waiting_for = ""
            return False
        # synced again when a dependency finishes (see ``_follow_up``), not retried on a timer
        message = "waiting for " + "; ".join(unmet)
        if state.waiting_for != message:
            state.waiting_for = message
            state.conditions = next_conditions(
                state.conditions, "Reconciling", "DependencyNotReady", message, now_rfc3339()
            )
            log.info("sync held back", environment=state.config.name, reason=message)
            await self.reporter.report(state.config.name, [])
        return True

    def _options(self, env: EnvironmentConfig, revision: str) -> SyncOptions:
        return SyncOptions(
            environment=env.name,
            revision=revision,
            prune=PruneOptions(
                enabled=env.prune,
                max_share=env.max_prune_share,
                prune_protected_kinds=env.prune_protected_kinds,
            ),
            health_timeout=env.health_timeout,
            wait_for_all=False,
            diffs=False,  # nobody reads the daemon's diffs (the status API shows actions)
            policy=self._access_policy(env),
        )

    async def _run(
        self, state: EnvironmentState, snapshot: Path, revision: str, context: dict[str, Any]
    ) -> tuple[SyncResult, float]:
        """The engine's sync of ``state``'s directory in ``snapshot``; the result and its seconds."""
        env = state.config
        engine = self.engines.get(engine_key(env))
        options = self._options(env, revision)
        with structlog.contextvars.bound_contextvars(**context):
            down = self.unreachable(env.cluster) or ("not connected" if engine is None else "")
            if down or engine is None:
                # a cluster the probe found down is not called at all: no worker of its lane waits on
                # it; its probe queues the sync again as soon as it answers
                result = SyncResult(env.name, revision)
                result.end(Condition.STALLED, Reason.CLUSTER_UNREACHABLE, f"cluster {env.cluster}: {down}")
                log.warning("sync skipped: cluster unreachable", cluster=env.cluster, error=down)
                return result, 0.0
            log.info("sync started")
            started = time.monotonic()
            state.syncing_key = state.latest_key or "?"
            try:
                result = await engine.sync_directory(
                    snapshot, snapshot / env.path, render_options(self.kustomize, env), options
                )
            finally:
                state.syncing_key = ""
            return result, time.monotonic() - started

    async def _record(self, state: EnvironmentState, result: SyncResult, revision: str) -> None:
        """What the finished sync leaves in the environment's state."""
        previous_key = state.input_key
        if result.changeset.changed:
            state.last_change = {
                "revision": revision,
                "time": now_rfc3339(),
                "summary": result.changeset.summary(),
            }
            state.change_loaded = True
        elif not state.change_loaded:
            state.last_change = await self.reporter.previous_change(state)
        state.result, state.revision, state.last_sync = result, revision, time.time()
        state.syncs += 1
        state.input_key = result.input_hash or f"error@{revision}"
        if result.ok:
            state.last_success = time.time()
            if not state.healthy_since or previous_key != state.input_key:
                state.healthy_since = time.time()
        else:
            state.healthy_since = 0.0

    def _follow_up(self, name: str, result: SyncResult) -> None:
        """Wake promotions and the environments waiting for this one; retry or look again later."""
        promotions = self.promotions()
        if promotions is not None:
            promotions.wake()
        for other in self.environments.values():
            if other.waiting_for and name in other.config.depends_on:
                self.queue.add(f"env:{other.config.name}")
        # failures worth retrying with the same inputs (the API server may recover; another environment
        # may release an object or bring a namespace or CRD) are told by their Reason; render and manifest
        # errors, policy violations and a blocked prune wait for a new revision (or an operator) instead
        if result.retryable:
            # retried with backoff by the queue (1 s doubling to 60 s): what the API server refused may
            # depend on another environment (a namespace, a CRD) that is still syncing
            raise RuntimeError(f"{name}: {result.reason}: {result.message}")
        if result.condition == "Reconciling":
            self.queue.add_after(f"env:{name}", 5.0)

    def _access_policy(self, env: EnvironmentConfig) -> AccessPolicy:
        """What ``env`` may change: its configured namespaces and cluster-scoped kinds; never the
        daemon's own namespaces (inventories, Lease, configuration, Secrets)."""
        return AccessPolicy(
            namespaces=env.namespaces,
            cluster_scoped=env.cluster_scoped,
            reserved_namespaces=frozenset(
                {self.settings.inventory_namespace, self.settings.leader_election.namespace}
            ),
        )

    def _unmet_dependencies(self, state: EnvironmentState) -> list[str]:
        """The ``depends_on`` environments not yet Ready at their latest inputs, each with why."""
        unmet: list[str] = []
        for dependency in state.config.depends_on:
            other = self.environments[dependency]
            result = other.result
            if result is None:
                unmet.append(f"{dependency} (not synced yet)")
            elif not result.ok:
                unmet.append(f"{dependency} ({result.condition}: {result.reason})")
            elif other.latest_key and other.input_key != other.latest_key:
                unmet.append(f"{dependency} (syncing its new inputs)")
        return unmet
