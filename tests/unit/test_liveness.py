"""Liveness: a daemon whose internal loop died says so on /healthz (500, naming the loop), so the
kubelet restarts it instead of leaving a process that answers probes and silently does nothing."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from reconciler.daemon import Daemon


async def test_a_dead_loop_fails_liveness_and_names_the_loop(offline_daemon: Daemon) -> None:
    daemon = offline_daemon
    async with TestClient(TestServer(daemon.app)) as http:
        alive = await http.get("/healthz")
        assert (alive.status, await alive.json()) == (200, {"status": "ok"})

        async def fine() -> None:
            await asyncio.Event().wait()

        async def broken() -> None:
            raise KeyError("status")

        daemon._spawn(fine(), "steady")
        daemon._spawn(broken(), "promotions")
        # the daemon's done callback was added first, so it has run when wait() returns
        await asyncio.wait(daemon._tasks, timeout=5, return_when=asyncio.FIRST_EXCEPTION)
        dead = await http.get("/healthz")
        assert dead.status == 500
        assert (await dead.json())["reasons"] == ["promotions: KeyError: 'status'"]
        for task in daemon._tasks:
            task.cancel()
        await asyncio.gather(*daemon._tasks, return_exceptions=True)
        assert daemon.liveness() == ["promotions: KeyError: 'status'"]  # a cancelled loop is no death
