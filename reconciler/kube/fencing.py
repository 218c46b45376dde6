"""The write fence of the running task: with sharding, a sync or drift correction runs under the claim
of its environment, and every request that may write (anything but GET) checks that claim first.

``fenced(fence)`` sets it for a block (asyncio tasks created inside inherit it); ``KubeClient`` calls
``guard`` before each request: a fence that can no longer be proven held raises (``ClaimLost``), so a
replica that lost its claim stops between two API calls and writes nothing more, and a request's
timeout is cut to what is left of the claim, so a write never lands after a successor may have taken
it (the claim's safety margin covers the request in flight).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol


class WriteFence(Protocol):
    """What a fence offers: ``ensure`` raises once it is not held; ``remaining`` seconds of it."""

    def ensure(self) -> None:
        """Raise when the claim can no longer be proven held."""

    @property
    def remaining(self) -> float:
        """Seconds until the claim stops counting as held."""


_CURRENT: ContextVar[WriteFence | None] = ContextVar("reconciler_write_fence", default=None)


@contextlib.contextmanager
def fenced(fence: WriteFence) -> Iterator[None]:
    """Run the block (and the tasks it creates) under ``fence``."""
    token = _CURRENT.set(fence)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def unfenced() -> contextvars.Context:
    """A copy of the running context without a fence: for long-lived tasks started during a fenced
    block (a watch, an Event sender, a drift correction), which must not carry one sync's claim."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, None)
    return context


def current() -> WriteFence | None:
    """The fence of the running task (None outside a fenced block)."""
    return _CURRENT.get()


def guard(method: str, timeout: float) -> float:
    """Before a request: raise if it may write and the fence is gone; the timeout it may take."""
    fence = _CURRENT.get()
    if fence is None or method == "GET":
        return timeout
    fence.ensure()
    return max(0.1, min(timeout, fence.remaining))
