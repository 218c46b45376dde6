"""The daemon's supervised asyncio tasks: named loops whose death fails liveness, and short-lived
background tasks (nudges, status writes) that shutdown cancels with them."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Tasks:
    """The loops the daemon runs and the background tasks it started."""

    def __init__(self) -> None:
        self.loops: list[asyncio.Task[Any]] = []
        self.dead: list[str] = []
        self.background: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Any, name: str) -> None:
        """Run a loop; if it ends with an error, liveness fails from then on."""
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._done)
        self.loops.append(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A loop that ends with an error is logged at once and fails liveness (it never recovers)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}"
        log.error("internal loop died", task=task.get_name(), error=reason, exc_info=error)
        self.dead.append(f"{task.get_name()}: {reason}")

    def in_background(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run a short task nobody waits for (kept referenced until it ends)."""
        task = asyncio.create_task(coroutine, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def cancel_all(self) -> None:
        """Cancel every loop and background task (shutdown)."""
        for task in [*self.loops, *self.background]:
            task.cancel()


def dump_tasks() -> None:
    """Write every asyncio task's name and stack to stderr (SIGUSR2: where is the daemon waiting?)."""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        print(f"--- task {task.get_name()}", file=out)
        task.print_stack(limit=30, file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()
