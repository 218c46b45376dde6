"""The request retry policy (``reconciler.retry.request``): a first try without retry machinery, then
stamina's waits and limits for transient failures, nothing retried that is not transient."""

from __future__ import annotations

import time

import pytest

from reconciler import retry
from reconciler.kube.errors import KubeError, NotFoundError, TransientError


class Script:
    """Answers each call with the next of ``outcomes`` (an exception is raised), counting calls."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_a_request_that_succeeds_is_made_once() -> None:
    script = Script("ok")
    assert await retry.request(script, 3) == "ok"
    assert script.calls == 1


async def test_a_transient_failure_is_retried_after_the_policy_wait() -> None:
    script = Script(TransientError("ConfigMap/a/b", "API server unreachable"), "ok")
    started = time.monotonic()
    assert await retry.request(script, 3) == "ok"
    assert script.calls == 2
    assert time.monotonic() - started >= 0.2  # the policy's first wait (0.2 s + jitter)


async def test_transient_failures_stop_after_the_attempts_with_the_last_error() -> None:
    errors = [TransientError("ConfigMap/a/b", f"failure {n}") for n in range(3)]
    script = Script(*errors)
    with pytest.raises(TransientError, match="failure 2"):
        await retry.request(script, 3)
    assert script.calls == 3


@pytest.mark.parametrize(
    ("error", "attempts"),
    [(NotFoundError("ConfigMap/a/b", "not found", 404), 3), (TransientError("ConfigMap/a/b", "down"), 1)],
)
async def test_no_retry_for_what_is_not_transient_or_a_single_attempt(
    error: KubeError, attempts: int
) -> None:
    script = Script(error, "never")
    with pytest.raises(type(error)):
        await retry.request(script, attempts)
    assert script.calls == 1
