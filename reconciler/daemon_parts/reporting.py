"""Reporting: the Environment objects (status writes retried until they land), Events and metrics of
a finished sync, of drift, and of the environments a fetch moved without a sync."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from reconciler.envstatus import EnvironmentObjects, next_conditions, now_rfc3339
from reconciler.events import EventNote, EventRecorder, drift_event, sync_events
from reconciler.kube.errors import KubeError
from reconciler.metrics import Metrics
from reconciler.objects import ChangeSetEntry
from reconciler.settings import Settings
from reconciler.sync import SyncResult
from reconciler.workqueue import WorkQueue

from .environment import EnvironmentState
from .tasks import Tasks

log = structlog.get_logger("reconciler.daemon")
STATUS = "status:"


class Reporter:
    """Writes what the daemon knows about its environments where people and tools look."""

    def __init__(
        self,
        settings: Settings,
        environments: dict[str, EnvironmentState],
        environment_objects: dict[str, EnvironmentObjects],
        events: EventRecorder,
        metrics: Metrics,
        queue: WorkQueue,
        leading: asyncio.Event,
        tasks: Tasks,
        unreachable: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.unreachable = unreachable  # why a cluster cannot be used now ("" when it answers)
        self.owns: Callable[[str], bool] = lambda _name: True  # with sharding: this replica's environments
        self.environments = environments
        self.environment_objects = environment_objects  # by cluster, filled at startup
        self.events = events
        self.metrics = metrics
        self.queue = queue
        self.leading = leading
        self.tasks = tasks

    async def after_sync(self, state: EnvironmentState, result: SyncResult, elapsed: float) -> None:
        """Metrics, conditions, the Environment object and Events of one finished sync."""
        name = state.config.name
        previous = next((c["type"] for c in state.conditions if c.get("status") == "True"), "")
        self.metrics.synced(result, elapsed)
        if result.synced and result.revision:
            state.applied_revision = result.revision
            self.metrics.applied_revision(name, result.revision)
        state.conditions = next_conditions(
            state.conditions, result.condition, result.reason, state.message(), now_rfc3339()
        )
        await self.report(name, sync_events(result, previous))

    async def previous_change(self, state: EnvironmentState) -> dict[str, str] | None:
        """The last change an earlier leader (or this daemon before a restart) recorded on the object."""
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None:
            return None
        try:
            change = await objects.previous_change(state.config.name)
        except KubeError as exc:
            log.warning("could not read the Environment objects", error=str(exc))
            return None
        state.change_loaded = True
        if change is None:
            return None
        return {key: str(change.get(key) or "") for key in ("revision", "time", "summary")}

    async def report(self, name: str, notes: list[EventNote]) -> None:
        """Write the environment's object (when its status changed) and record ``notes`` about it; a
        refused write is retried with backoff (``status:<name>``) until it lands."""
        state = self.environments[name]
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None or self.unreachable(state.config.cluster):
            # written once it answers again (its syncs run then); Events about it would fail as well
            self.queue.add(STATUS + name)
            return
        if not await self.write_status(name):
            self.queue.add(STATUS + name)
        for note in notes:
            self.events.record(objects.client, objects.involved(name), note)

    async def write_status(self, name: str) -> bool:
        """Write the environment's object as it is now; False when the API server refused."""
        state = self.environments[name]
        objects = self.environment_objects.get(state.config.cluster)
        if objects is None:
            return True
        spec = {
            "path": state.config.path,
            "cluster": state.config.cluster,
            "repository": self.settings.repository.url,
            "branch": self.settings.repository.branch,
            "prune": state.config.prune,
        }
        return await objects.report(name, spec, state.status())

    async def retry_status(self, name: str) -> None:
        """The work item ``status:<name>``: write again, raise (for the queue's backoff) if refused."""
        if not await self.write_status(name):
            objects = self.environment_objects.get(self.environments[name].config.cluster)
            why = objects.failing(name) if objects is not None else "its cluster is not connected"
            raise RuntimeError(f"the Environment object {name} was not written: {why}")

    def report_later(self, names: list[str]) -> None:
        """Report these environments (those this replica syncs) in a background task (at most 16 writes
        at a time)."""
        names = [name for name in names if self.owns(name)]
        if not names:
            return

        async def report_all() -> None:
            # the syncs this fetch queued go first: their writes are what a push is waiting for
            await self.queue.wait_idle("env:", timeout=30)
            limit = asyncio.Semaphore(16)

            async def one(name: str) -> None:
                async with limit:
                    await self.report(name, [])

            results = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
            for name, outcome in zip(names, results, strict=True):
                if isinstance(outcome, Exception):
                    log.warning("could not report the environment", environment=name, error=str(outcome))

        self.tasks.in_background(report_all(), "report-revisions")

    def on_drift(self, environment: str, entry: ChangeSetEntry) -> None:
        """The engine corrected (or refused to correct) drift: count it and say so."""
        self.metrics.drift(environment, entry)
        state = self.environments.get(environment)
        objects = self.environment_objects.get(state.config.cluster) if state is not None else None
        if objects is not None and self.leading.is_set():
            self.events.record(objects.client, objects.involved(environment), drift_event(entry))
