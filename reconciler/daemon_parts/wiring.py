"""Startup wiring and the daemon's periodic loops: clients, watch caches and engines per cluster (and
per tenant service account), the Environment objects, reconciler's CRDs, the HTTP server, the Git poll,
the periodic resync and the cluster probe."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import structlog
from aiohttp import web

from reconciler import crds
from reconciler.envstatus import EnvironmentObjects
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.objects import ChangeSetEntry
from reconciler.render import Renderer
from reconciler.server import listener
from reconciler.settings import Settings
from reconciler.sync import Engine
from reconciler.workqueue import WorkQueue

from .environment import EnvironmentState, engine_key
from .fetching import FETCH

log = structlog.get_logger("reconciler.daemon")


class Clusters:
    """The daemon's connections to its clusters: clients, watch caches, engines, Environment objects."""

    def __init__(self) -> None:
        self.clients: dict[str, KubeClient] = {}
        self.caches: dict[str, LiveCache] = {}
        self.engines: dict[str, Engine] = {}  # by engine_key
        self.environment_objects: dict[str, EnvironmentObjects] = {}  # by cluster

    async def connect(
        self, settings: Settings, renderer: Renderer, on_drift: Callable[[str, ChangeSetEntry], None]
    ) -> None:
        """Connect to every configured cluster and build its cache, engines and Environment objects."""
        for cluster in settings.clusters:
            if cluster.in_cluster:
                client = KubeClient.in_cluster()
            else:
                client = await KubeClient.from_kubeconfig(cluster.kubeconfig, cluster.context)
            self.clients[cluster.name] = client
            cache = LiveCache(client)
            self.caches[cluster.name] = cache
            engine = Engine(client, cache=cache, renderer=renderer)
            engine.inventory.namespace = settings.inventory_namespace
            engine.on_drift = on_drift
            self.engines[cluster.name] = engine
            # an environment with a service_account syncs through an engine whose every request is made
            # as that identity; inventories, watches and the Environment objects stay the daemon's own
            for env in settings.environments:
                if env.cluster == cluster.name and env.service_account:
                    tenant = Engine(
                        client.impersonating(env.impersonated_user),
                        inventory=engine.inventory,
                        cache=cache,
                        renderer=renderer,
                    )
                    tenant.on_drift = on_drift
                    self.engines.setdefault(engine_key(env), tenant)
            self.environment_objects[cluster.name] = EnvironmentObjects(client, settings.inventory_namespace)

    async def install_crds(self) -> None:
        """Apply reconciler's CRDs to every cluster (``install_crds``); a refusal is logged, not fatal."""
        for name, client in self.clients.items():
            try:
                installed = await crds.ensure(client)
                log.info("CRDs installed", cluster=name, crds=installed)
            except KubeError as exc:
                log.error(
                    "could not install reconciler's CRDs; install deploy/base/crds as an administrator "
                    "and set install_crds: false",
                    cluster=name,
                    error=str(exc),
                )


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


async def probe_clusters(
    clients: dict[str, KubeClient],
    cluster_errors: dict[str, str],
    environments: dict[str, EnvironmentState],
    queue: WorkQueue,
    leading: asyncio.Event,
) -> None:
    """Every 5 s (every 0.5 s while one does not answer): is each cluster reachable? When one answers
    again, the syncs that failed meanwhile run at once instead of waiting out their backoff."""
    while True:
        for name, client in clients.items():
            try:
                await client.request("GET", "/version", subject=f"cluster {name}")
            except KubeError as exc:
                cluster_errors[name] = str(exc)
                continue
            if cluster_errors.pop(name, None) is not None and leading.is_set():
                retried = [
                    state.config.name
                    for state in environments.values()
                    if state.config.cluster == name and queue.backing_off(f"env:{state.config.name}")
                ]
                for env in retried:
                    queue.add_now(f"env:{env}")
                log.info("cluster reachable again", cluster=name, retried=retried)
        await asyncio.sleep(0.5 if cluster_errors else 5)
