"""Kubernetes Events about environments: what to say (pure), how often (correlator), and sending them.

Every Event's ``involvedObject`` is the environment's ``Environment`` object, so
``kubectl get events -n reconciler-system`` (or ``kubectl describe environment NAME``) tells an
environment's story: syncs that changed something, prunes, blocked prunes, failures, drift corrections
and fights. What is said is derived from the sync's ``SyncResult``/``ChangeSet`` and the engine's drift
entries only (``sync_events``, ``drift_event``): messages name objects and reasons, never values.

A loop must not flood the API server: the ``Correlator`` turns a repeat of the same event (same object,
type, reason and message within ``window``) into a count on the existing Event (like client-go's
correlator), and a token bucket per involved object (``burst`` events, then one per ``refill`` seconds)
drops the rest, counted in ``reconciler_events_total{outcome="throttled"}``. Sending happens in one
background task fed by a bounded queue, so recording never blocks a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from reconciler.kube import fencing
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError, NotFoundError
from reconciler.objects import Action, ChangeSetEntry
from reconciler.sync import SyncResult

log = structlog.get_logger(__name__)

EventType = Literal["Normal", "Warning"]
COMPONENT = "reconciler"
MAX_MESSAGE = 1024
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class InvolvedObject:
    """The object an Event is about (an Environment)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def body(self) -> dict[str, str]:
        """The ``involvedObject`` field."""
        body = {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace}
        body["name"] = self.name
        if self.uid:
            body["uid"] = self.uid
        return body


@dataclass(frozen=True)
class EventNote:
    """What to say: type, reason (CamelCase) and a human message."""

    type: EventType
    reason: str
    message: str


def _objects(entries: list[ChangeSetEntry], limit: int = 5) -> str:
    names = ", ".join(str(e.key) for e in entries[:limit])
    return names + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def sync_events(result: SyncResult, previous_condition: str = "") -> list[EventNote]:
    """The Events one sync deserves: changes, prunes, blocked prunes and failures (a no-op says nothing,
    unless the environment just became Ready again)."""
    revision = result.revision[:12] or "(working tree)"
    notes: list[EventNote] = []
    changes = result.changeset
    written = [e for e in changes.entries if e.action in (Action.CREATED, Action.CONFIGURED)]
    deleted = changes.by_action(Action.DELETED)
    failed = changes.by_action(Action.FAILED)
    if written:
        counts = changes.counts()
        applied = ", ".join(
            f"{counts[a.value]} {a.value}" for a in (Action.CREATED, Action.CONFIGURED) if counts[a.value]
        )
        notes.append(EventNote("Normal", "Applied", f"revision {revision}: {applied}: {_objects(written)}"))
    if deleted:
        notes.append(EventNote("Normal", "Pruned", f"revision {revision}: pruned {_objects(deleted)}"))
    if result.prune_blocked:
        notes.append(EventNote("Warning", "PruneBlocked", f"revision {revision}: {result.prune_blocked}"))
    elif result.condition == "Stalled":
        notes.append(
            EventNote("Warning", result.reason or "SyncFailed", f"revision {revision}: {result.message}")
        )
    elif failed:
        notes.append(EventNote("Warning", "PruneFailed", f"revision {revision}: {_objects(failed)}"))
    if result.ok and (written or deleted or previous_condition != "Ready"):
        notes.append(EventNote("Normal", "Synced", f"revision {revision} is applied and healthy"))
    return notes


def drift_event(entry: ChangeSetEntry) -> EventNote:
    """The Event of one drift outcome recorded by the engine."""
    if entry.action == Action.SKIPPED:
        return EventNote("Warning", "DriftFight", f"{entry.key}: {entry.message}")
    if entry.action == Action.FAILED:
        return EventNote("Warning", "DriftCorrectionFailed", f"{entry.key}: {entry.message}")
    return EventNote("Normal", "DriftCorrected", f"{entry.key}: {entry.message}")


@dataclass(frozen=True)
class Decision:
    """What to do with one recorded event: create a new Event, count a repeat on one, or drop it."""

    outcome: Literal["created", "aggregated", "throttled"]
    name: str = ""
    count: int = 1
    first: float = 0.0


@dataclass
class _Seen:
    name: str
    count: int
    first: float
    last: float


@dataclass
class Correlator:
    """Deduplication and rate limiting of Events, per involved object (pure: time comes from ``clock``)."""

    burst: int = 20
    refill: float = 15.0
    window: float = 600.0
    clock: Callable[[], float] = time.time
    max_keys: int = 4096
    _seen: OrderedDict[tuple[str, ...], _Seen] = field(default_factory=OrderedDict)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _take(self, obj: str, now: float) -> bool:
        tokens, since = self._buckets.get(obj, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) / self.refill)
        if tokens < 1:
            self._buckets[obj] = (tokens, now)
            return False
        self._buckets[obj] = (tokens - 1, now)
        return True

    def decide(self, involved: InvolvedObject, note: EventNote) -> Decision:
        """Decide for one event; the caller creates or patches the Event named in the decision."""
        now = self.clock()
        obj = f"{involved.namespace}/{involved.kind}/{involved.name}"
        if not self._take(obj, now):
            return Decision("throttled")
        key = (obj, note.type, note.reason, note.message)
        seen = self._seen.get(key)
        if seen is not None and now - seen.last <= self.window:
            seen.count += 1
            seen.last = now
            self._seen.move_to_end(key)
            return Decision("aggregated", seen.name, seen.count, seen.first)
        name = f"{involved.name}.{int(now * 1000):x}{secrets.token_hex(2)}"
        self._seen[key] = _Seen(name, 1, now, now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return Decision("created", name, 1, now)


def _timestamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Pending:
    client: KubeClient
    involved: InvolvedObject
    note: EventNote
    decision: Decision


class EventRecorder:
    """Records Events without blocking the caller: decides at once, sends from a background task."""

    def __init__(
        self,
        *,
        instance: str,
        correlator: Correlator | None = None,
        on_outcome: Callable[[str, str], None] | None = None,
        queue_size: int = 1000,
    ) -> None:
        self.instance = instance
        self.correlator = correlator or Correlator()
        self.on_outcome = on_outcome or (lambda _reason, _outcome: None)
        self.queue_size = queue_size
        # one queue and sending task per API server: a cluster that does not answer (each send waits
        # for its timeout) never delays the Events of another
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False

    def start(self) -> None:
        """Start sending (a task per API server, created with its first Event)."""
        self._started = True
        for host, queue in self._queues.items():
            self._start(host, queue)

    def _start(self, host: str, queue: asyncio.Queue[_Pending]) -> None:
        if host not in self._tasks:
            self._tasks[host] = asyncio.create_task(
                self._run(queue), name=f"event-recorder {host}", context=fencing.unfenced()
            )

    def _queue_of(self, client: KubeClient) -> asyncio.Queue[_Pending]:
        queue = self._queues.get(client.host)
        if queue is None:
            queue = self._queues[client.host] = asyncio.Queue(maxsize=self.queue_size)
            if self._started:
                self._start(client.host, queue)
        return queue

    def record(self, client: KubeClient, involved: InvolvedObject, note: EventNote) -> None:
        """Record one event about ``involved`` in its namespace (deduplicated and rate limited)."""
        note = EventNote(note.type, note.reason, note.message[:MAX_MESSAGE])
        decision = self.correlator.decide(involved, note)
        if decision.outcome == "throttled":
            self.on_outcome(note.reason, "throttled")
            log.debug("event throttled", reason=note.reason, object=involved.name)
            return
        try:
            self._queue_of(client).put_nowait(_Pending(client, involved, note, decision))
        except asyncio.QueueFull:
            self.on_outcome(note.reason, "throttled")

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every queued event was sent."""
        waits = [queue.join() for queue in self._queues.values()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)

    async def close(self, timeout: float = 1.0) -> None:
        """Send what is queued (bounded), then stop."""
        await self.flush(timeout)
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        failing = ""  # the kind of error the last send failed with ("" after a success)
        while True:
            pending = await queue.get()
            try:
                await self._send(pending)
                self.on_outcome(pending.note.reason, pending.decision.outcome)
                if failing:
                    log.info("events are recorded again")
                failing = ""
            except KubeError as exc:
                self.on_outcome(pending.note.reason, "failed")
                # a warning whenever sending starts failing or fails in another way (each message
                # names its Event, so the kind of error is compared); repeats are counted
                # (reconciler_events_total{outcome="failed"}) and logged at debug level
                kind = type(exc).__name__
                (log.debug if kind == failing else log.warning)(
                    "could not record an event", reason=pending.note.reason, error=str(exc)
                )
                failing = kind
            finally:
                queue.task_done()

    async def _send(self, pending: _Pending) -> None:
        involved, note, decision = pending.involved, pending.note, pending.decision
        path = f"/api/v1/namespaces/{involved.namespace}/events"
        now = _timestamp(time.time())
        if decision.outcome == "aggregated":
            patch = {"count": decision.count, "lastTimestamp": now}
            try:
                await pending.client.request(
                    "PATCH",
                    f"{path}/{decision.name}",
                    body=patch,
                    content_type=MERGE_PATCH,
                    subject=f"Event/{involved.namespace}/{decision.name}",
                )
                return
            except NotFoundError:
                pass  # expired or never created: create it again, with its count
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": decision.name, "namespace": involved.namespace},
            "involvedObject": involved.body(),
            "type": note.type,
            "reason": note.reason,
            "message": note.message,
            "count": decision.count,
            "firstTimestamp": _timestamp(decision.first),
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": f"reconciler.dev/{COMPONENT}",
            "reportingInstance": self.instance[:128],
        }
        await pending.client.request(
            "POST", path, body=body, subject=f"Event/{involved.namespace}/{decision.name}"
        )
