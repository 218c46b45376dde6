"""The daemon's HTTP server and periodic loops: the Git poll and the periodic resync (the clusters'
connections and probes are ``clusters``)."""

from __future__ import annotations

import asyncio
import random

import structlog
from aiohttp import web

from reconciler.server import listener
from reconciler.settings import Settings
from reconciler.workqueue import WorkQueue

from .environment import EnvironmentState
from .fetching import FETCH

log = structlog.get_logger("reconciler.daemon")


async def serve(app: web.Application, settings: Settings) -> web.AppRunner:
    """Start the HTTP server: a TCPSite with a deadline and size cap on request headers (slowloris)."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = listener.Site(runner, settings.listen_host, settings.listen_port, shutdown_timeout=2)
    await site.start()
    log.info("listening", address=settings.listen)
    return runner


async def poll(settings: Settings, queue: WorkQueue) -> None:
    """Queue a fetch every ``poll_interval`` (with jitter)."""
    config = settings.repository
    while True:
        jitter = 1 + random.uniform(-config.poll_jitter, config.poll_jitter)  # noqa: S311
        await asyncio.sleep(config.poll_interval * jitter)
        queue.add(FETCH)


async def resync(
    settings: Settings, environments: dict[str, EnvironmentState], queue: WorkQueue, leading: asyncio.Event
) -> None:
    """Queue a sync of every environment every ``resync_interval`` while leading."""
    while True:
        await asyncio.sleep(settings.resync_interval)
        if leading.is_set():
            for name in environments:
                queue.add(f"env:{name}")
