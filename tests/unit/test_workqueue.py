"""The work queue: deduplication, never two runs of one key at once, retries with backoff."""

from __future__ import annotations

import asyncio

from reconciler.workqueue import Backoff, WorkQueue
from tests.helpers import eventually


async def test_a_burst_of_adds_runs_once_and_a_key_never_runs_twice_at_once() -> None:
    """20 adds while queued give one run; adds during a run give exactly one more run afterwards."""
    running: set[str] = set()
    runs: list[str] = []
    overlap: list[str] = []
    release = asyncio.Event()

    async def handler(key: str) -> None:
        if key in running:
            overlap.append(key)
        running.add(key)
        runs.append(key)
        await release.wait()
        running.discard(key)

    queue = WorkQueue(handler, workers=4)
    for _ in range(20):
        queue.add("env:a")
    queue.start()
    await eventually(lambda: _async(len(runs) == 1), what="the first run")
    for _ in range(20):
        queue.add("env:a")  # while it runs: marked dirty, not run in parallel
    release.set()
    await eventually(lambda: _async(len(runs) == 2 and not queue.busy), what="exactly one more run")
    assert overlap == []
    await queue.close()


async def test_failures_are_retried_with_growing_delays() -> None:
    """A failing key comes back after a backoff; polls do not override the backoff."""
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(key: str) -> None:
        attempts.append(loop.time())
        if len(attempts) < 3:
            raise RuntimeError("git server down")

    queue = WorkQueue(handler, workers=1, backoff=Backoff(base=0.2, cap=5))
    queue.start()
    queue.add("fetch")
    await eventually(
        lambda: _async(len(attempts) >= 1 and "fetch" in queue.backoff.failures), what="a failure"
    )
    queue.add("fetch")  # a poll during the backoff does not retry early
    await eventually(lambda: _async(len(attempts) == 3), timeout=10, what="two retries")
    first_gap, second_gap = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert first_gap >= 0.1
    assert second_gap >= 0.2
    assert "fetch" not in queue.backoff.failures
    await queue.close()


def test_backoff_grows_and_is_capped() -> None:
    """Delays double up to the cap, with jitter in the upper half."""
    backoff = Backoff(base=1, cap=8)
    delays = [backoff.next_delay("k") for _ in range(6)]
    assert 0.5 <= delays[0] <= 1
    assert 4 <= delays[3] <= 8
    assert all(d <= 8 for d in delays)
    backoff.reset("k")
    assert backoff.next_delay("k") <= 1


async def _async(value: bool) -> bool:
    return value


async def test_wait_idle_returns_when_the_prefixed_keys_are_done_and_ignores_others() -> None:
    """Background work waits for the syncs a fetch queued, not for unrelated keys."""
    gates = {"env:a": asyncio.Event(), "fetch": asyncio.Event()}

    async def handler(key: str) -> None:
        await gates[key].wait()

    queue = WorkQueue(handler, workers=4)
    queue.add("env:a")
    queue.add("fetch")
    queue.start()
    assert await queue.wait_idle("env:", timeout=0.05) is False  # still running: gives up at the deadline
    waiter = asyncio.create_task(queue.wait_idle("env:", timeout=10))
    await asyncio.sleep(0)
    assert not waiter.done()
    gates["env:a"].set()
    assert await waiter is True
    assert queue.busy_with("fetch")  # unrelated work still runs
    gates["fetch"].set()
    await queue.close()


async def test_add_now_runs_a_key_that_is_backing_off_at_once_and_keeps_its_failure_count() -> None:
    """A webhook does not wait for the backoff of a failing fetch (a poll does); a failure afterwards
    waits longer than before."""
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def handler(key: str) -> None:
        attempts.append(loop.time())
        raise RuntimeError("git server down")

    queue = WorkQueue(handler, workers=1, backoff=Backoff(base=30, cap=60))
    queue.start()
    queue.add("fetch")
    await eventually(lambda: _async(queue.backing_off("fetch")), what="the first failure")
    queue.add("fetch")  # a poll: ignored while backing off
    await asyncio.sleep(0)
    assert len(attempts) == 1
    queue.add_now("fetch")  # an accepted webhook: at once
    await eventually(lambda: _async(len(attempts) == 2), timeout=5, what="the second attempt")
    assert attempts[1] - attempts[0] < 5  # not the 15-30 s backoff
    await eventually(lambda: _async(queue.backing_off("fetch")), what="the second failure")
    assert queue.backoff.failures["fetch"] == 2
    await queue.close()


async def test_cancel_stops_the_running_handlers_of_a_prefix_without_retrying_them() -> None:
    """Cancelled work is not retried; the worker keeps serving; a key added during the run runs again."""
    started: list[str] = []
    finished: list[str] = []
    gate = asyncio.Event()

    async def handler(key: str) -> None:
        started.append(key)
        if len(started) == 1:
            await gate.wait()
        finished.append(key)

    queue = WorkQueue(handler, workers=1)
    queue.start()
    queue.add("env:a")
    await eventually(lambda: _async(started == ["env:a"]), what="the first run")
    assert queue.cancel("fetch") == 0
    queue.add("env:a")  # a newer revision arrived while it ran
    assert queue.cancel("env:") == 1
    await eventually(lambda: _async(finished == ["env:a"]), what="the run of the newer revision")
    assert started == ["env:a", "env:a"]
    assert "env:a" not in queue.backoff.failures
    await queue.close()


async def test_a_lane_whose_work_hangs_never_holds_another_lanes_workers() -> None:
    """Keys of a lane that hangs (a cluster that does not answer) fill only that lane's workers (its
    limit, not the default): every key of the other lanes still runs at once."""
    hung = asyncio.Event()
    running_a: set[str] = set()
    done: list[str] = []

    async def handler(key: str) -> None:
        if key.startswith("env:a-"):
            running_a.add(key)
            await hung.wait()
        done.append(key)

    queue = WorkQueue(
        handler,
        workers=1,
        lane_of=lambda key: key.split(":", 1)[1].split("-", 1)[0] if key.startswith("env:") else "",
        lane_workers=lambda lane: 2,
    )
    queue.start()
    for index in range(5):
        queue.add(f"env:a-{index}")
    await eventually(lambda: _async(len(running_a) == 2), what="lane a's two workers busy")
    for index in range(5):
        queue.add(f"env:b-{index}")
    queue.add("fetch")
    expected = {f"env:b-{index}" for index in range(5)} | {"fetch"}
    await eventually(lambda: _async(expected <= set(done)), what="lane b and the default lane done")
    assert len(running_a) == 2  # lane a never took more than its limit
    hung.set()
    await eventually(lambda: _async(len(done) == 11), what="lane a drained once it answers")
    await queue.close()
