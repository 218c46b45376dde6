"""The one retry policy of reconciler, on stamina: what is retried, how often and how long to wait.

* ``requests``: an idempotent Kubernetes request that failed transiently (429, 5xx, timeouts, refused
  connections: ``KubeError.retryable``) is tried again up to ``attempts`` times, 0.2 s doubling to 2 s,
  with jitter; anything else is raised at once.
* ``relists``: a watch that failed is relisted for ever, 0.2 s doubling to 10 s, with jitter.
* ``until``: waiting for a condition the API server reaches by itself (an object gone, a kind served,
  a CRD established): ``NotYet`` is retried 0.05 s doubling to 1 s until a deadline, then raised.

Every retry is logged and counted by stamina (structlog and Prometheus, when present).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import stamina

from reconciler.kube.errors import KubeError

T = TypeVar("T")


class NotYet(Exception):
    """A condition that is expected to come true by itself has not yet."""


def _transient(exc: Exception) -> bool:
    return isinstance(exc, KubeError) and exc.retryable


async def requests(attempts: int) -> AsyncIterator[stamina.Attempt]:
    """Attempts of one Kubernetes request (``attempts`` 1: no retry)."""
    async for attempt in stamina.retry_context(
        on=_transient, attempts=attempts, timeout=None, wait_initial=0.2, wait_max=2.0, wait_jitter=0.2
    ):
        yield attempt


async def request(once: Callable[[], Awaitable[T]], attempts: int) -> T:
    """``once()`` under the ``requests`` policy. The first try is made before any retry machinery is
    built (most requests succeed, and building it costs more CPU than the request's own Python work:
    0.15 s in a 1,000-object sync); a transient failure of it is handed to stamina as its first
    attempt's, so the waits, the number of tries and the retry logs are those of ``requests``."""
    try:
        return await once()
    except KubeError as exc:
        if attempts <= 1 or not exc.retryable:
            raise
        failed: KubeError | None = exc
    async for attempt in requests(attempts):
        with attempt:
            if failed is not None:
                error, failed = failed, None
                raise error
            return await once()
    raise AssertionError("unreachable")  # pragma: no cover - stamina raises the last failure


async def relists() -> AsyncIterator[stamina.Attempt]:
    """Attempts of a watch's list-and-watch, for ever."""
    async for attempt in stamina.retry_context(
        on=(KubeError, ValueError, KeyError),
        attempts=None,
        timeout=None,
        wait_initial=0.2,
        wait_max=10.0,
        wait_jitter=0.5,
    ):
        yield attempt


async def until(check: Callable[[], Awaitable[T]], timeout: float) -> T:
    """``check()``'s value once it stops raising ``NotYet``; ``NotYet`` after ``timeout`` seconds."""
    async for attempt in stamina.retry_context(
        on=NotYet, attempts=None, timeout=timeout, wait_initial=0.05, wait_max=1.0, wait_jitter=0.05
    ):
        with attempt:
            return await check()
    raise NotYet  # pragma: no cover - stamina raises the last NotYet when the timeout is reached
