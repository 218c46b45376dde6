"""The daemon's work queue: per-key deduplication, retries with backoff and jitter, bounded workers.

Semantics follow client-go's workqueue: a key is queued at most once; a key added while it is being
processed is marked dirty and processed once more afterwards (never twice at the same time); failed
keys come back after an exponential backoff with jitter. Keys are strings such as ``fetch`` or
``env:staging``; a burst of events for one key collapses into one run.

``add`` leaves a key that is backing off alone (a poll must not defeat the backoff); ``add_now`` is for
requests someone is waiting for (an accepted webhook): it runs the key at once, backoff or not, and a
failure still counts towards the next delay. Each handler runs in a task of its own, so ``cancel`` can
stop the running work of some keys (when the daemon loses leadership) without stopping a worker.

**Lanes** isolate work that waits on different things: ``lane_of(key)`` names a key's lane (the daemon
uses one lane per cluster for the syncs and status writes of its environments, and the default lane
``""`` for fetches), and each lane has workers of its own (``lane_workers(lane)``, created when its
first key arrives). A cluster that does not answer then holds only its own lane's workers, never the
ones syncing another cluster or fetching Git. Deduplication, dirtiness and backoff stay per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[str], Coroutine[Any, Any, None]]
DEFAULT_LANE = ""


@dataclass
class Backoff:
    """Exponential backoff with full jitter, per key."""

    base: float = 0.5
    cap: float = 60.0
    failures: dict[str, int] = field(default_factory=dict)

    def next_delay(self, key: str) -> float:
        """Delay before the next retry of ``key`` (and count the failure)."""
        count = self.failures.get(key, 0)
        self.failures[key] = count + 1
        ceiling: float = min(self.cap, self.base * 2.0 ** min(count, 64))
        return ceiling / 2 + random.random() * ceiling / 2  # noqa: S311

    def reset(self, key: str) -> None:
        """Forget the failures of ``key`` after a success."""
        self.failures.pop(key, None)


class WorkQueue:
    """Deduplicating queue served by a bounded pool of workers."""

    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 4,
        backoff: Backoff | None = None,
        lane_of: Callable[[str], str] | None = None,
        lane_workers: Callable[[str], int] | None = None,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.backoff = backoff or Backoff()
        self.lane_of = lane_of or (lambda _key: DEFAULT_LANE)
        self.lane_workers = lane_workers or (lambda _lane: workers)
        self._lanes: dict[str, asyncio.Queue[str]] = {}
        self._started = False
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._finished = asyncio.Event()  # set each time a handler returns
        self.processed = 0

    def add(self, key: str) -> None:
        """Queue ``key`` unless it is already queued; mark it dirty if it is being processed.

        A key that is backing off after a failure stays backing off: its retry is already scheduled.
        """
        if self._closed:
            return
        if self.backing_off(key):
            return
        self._enqueue(key)

    def add_now(self, key: str) -> None:
        """Queue ``key`` at once even if it is backing off (someone is waiting for it): its scheduled
        retry is dropped; its failure count stays, so a failure now waits longer next time."""
        if self._closed:
            return
        self._enqueue(key)

    def backing_off(self, key: str) -> bool:
        """True while ``key`` waits for a retry after a failure."""
        return key in self.backoff.failures and key in self._timers

    def _enqueue(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._lane(key).put_nowait(key)

    def _lane(self, key: str) -> asyncio.Queue[str]:
        """The queue of ``key``'s lane (created, with its workers once started, on first use)."""
        name = self.lane_of(key)
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = asyncio.Queue()
            if self._started:
                self._start_lane(name, lane)
        return lane

    def _start_lane(self, name: str, lane: asyncio.Queue[str]) -> None:
        count = self.workers if name == DEFAULT_LANE else max(1, self.lane_workers(name))
        for index in range(count):
            label = f"worker-{index}" if name == DEFAULT_LANE else f"worker-{name}-{index}"
            self._tasks.append(asyncio.create_task(self._worker(lane), name=label))

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier ``add`` wins)."""
        if self._closed or key in self._queued:
            return
        existing = self._timers.get(key)
        if existing is not None and existing.when() <= asyncio.get_running_loop().time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if self._closed or key in self._queued:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        self._queued.add(key)
        self._lane(key).put_nowait(key)

    def start(self) -> None:
        """Start the workers (of the default lane, and of every lane that has keys already)."""
        self._started = True
        self._lanes.setdefault(DEFAULT_LANE, asyncio.Queue())
        for name, lane in self._lanes.items():
            self._start_lane(name, lane)

    def busy_with(self, prefix: str) -> bool:
        """True while a key starting with ``prefix`` is queued or being processed."""
        return any(key.startswith(prefix) for key in (*self._queued, *self._processing))

    async def wait_idle(self, prefix: str, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no key starting with ``prefix`` is queued or processed;
        True when that happened."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.busy_with(prefix):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._finished.wait()
        return True

    @property
    def busy(self) -> bool:
        """True while any key is queued or being processed."""
        return bool(self._queued or self._processing)

    def cancel(self, prefix: str) -> int:
        """Cancel the running handlers of keys starting with ``prefix`` (they are not retried); the
        number cancelled."""
        cancelled = 0
        for key, task in list(self._running.items()):
            if key.startswith(prefix) and not task.done():
                task.cancel()
                cancelled += 1
        return cancelled

    def cancel_key(self, key: str) -> bool:
        """Cancel the running handler of exactly ``key`` (not retried); True when one was running."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _worker(self, lane: asyncio.Queue[str]) -> None:
        while True:
            key = await lane.get()
            self._queued.discard(key)
            self._processing.add(key)
            task = asyncio.create_task(self.handler(key), name=f"work {key}")
            self._running[key] = task
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:  # the worker itself is stopped: stop its handler too
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            finally:
                self._running.pop(key, None)
                self.processed += 1
                self._processing.discard(key)
                self._finished.set()
            if task.cancelled():
                log.info("work cancelled", key=key)
            elif (error := task.exception()) is not None:  # one failing key must not stop the worker
                delay = self.backoff.next_delay(key)
                log.warning("work failed; retrying", key=key, error=str(error), retry_in=round(delay, 2))
                self.add_after(key, delay)
            else:
                self.backoff.reset(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; let running handlers finish for up to ``timeout`` s, then cancel them."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        deadline = time.monotonic() + timeout
        while self._processing and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded drain
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
