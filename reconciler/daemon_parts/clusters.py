"""The daemon's clusters: one connection per configured cluster (client, watch cache, engines,
Environment objects), how each is reached (kubeconfig file, in-cluster, or a kubeconfig held in a
Secret of the home cluster, followed by a watch and swapped when it changes), and a probe per cluster
that tells the rest of the daemon when one stops or starts answering.

Isolation is the point: each cluster has its own client (its own connection pool, request bound and
timeout), its own probe task (one cluster's slow answer never delays another's probe), and the daemon
gives each its own lane of workers (``WorkQueue`` lanes). ``errors`` holds, by cluster, why it cannot be
used right now; ``on_down``/``on_up`` are called when that changes, so the daemon can stall the
cluster's environments at once and converge them as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections.abc import Callable

import structlog

from reconciler import crds
from reconciler.envstatus import EnvironmentObjects
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import USER_AGENT, KubeClient
from reconciler.kube.errors import KubeError
from reconciler.kube.kubeconfig import KubeconfigError
from reconciler.metrics import Metrics
from reconciler.objects import Body, ChangeSetEntry
from reconciler.render import Renderer
from reconciler.settings import ClusterConfig, EnvironmentConfig, Settings
from reconciler.sync import Engine
from reconciler.sync.correction import Permit, always_permitted

from .environment import engine_key

log = structlog.get_logger("reconciler.daemon")

DOWN_PROBE_INTERVAL = 0.5  # seconds between probes of a cluster that does not answer
SECRET_RETRY = 5.0  # seconds before following a kubeconfig Secret again after its watch failed

Hook = Callable[[str], None]


def _ignore(_cluster: str) -> None:
    """The default hook: nothing."""


class Clusters:
    """Every cluster's connection, and why a cluster cannot be used now (``errors``)."""

    def __init__(
        self,
        settings: Settings,
        renderer: Renderer,
        metrics: Metrics,
        on_drift: Callable[[str, ChangeSetEntry], None],
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.metrics = metrics
        self.on_drift = on_drift
        self.clients: dict[str, KubeClient] = {}  # connected clusters only
        self.caches: dict[str, LiveCache] = {}
        self.engines: dict[str, Engine] = {}  # by engine_key
        self.environment_objects: dict[str, EnvironmentObjects] = {}  # by cluster
        self.errors: dict[str, str] = {}  # by cluster: why it cannot be used ("" never stored)
        self.secret_errors: dict[str, str] = {}  # by cluster: why its kubeconfig Secret was not used
        self._digests: dict[str, str] = {}  # by cluster: sha256 of the kubeconfig in use (Secrets)
        self.on_down: Hook = _ignore
        self.on_up: Hook = _ignore
        self.on_replaced: Hook = _ignore  # a cluster's client was replaced (its kubeconfig changed)
        self.permit: Permit = always_permitted  # of drift corrections (with sharding: owner and claim)

    # -- connecting -------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect every cluster given by file or in-cluster now; a cluster whose kubeconfig is in a
        Secret is connected by ``follow_secret`` (a task per cluster) as soon as it can be read."""
        for cluster in self.settings.clusters:
            self.metrics.cluster_up.labels(cluster.name).set(0)
            if cluster.kubeconfig_secret is not None:
                self.errors[cluster.name] = f"waiting for its kubeconfig ({cluster.kubeconfig_secret})"
                continue
            if cluster.in_cluster:
                client = KubeClient.in_cluster(request_timeout=cluster.request_timeout)
            else:
                client = await KubeClient.from_kubeconfig(
                    cluster.kubeconfig, cluster.context, request_timeout=cluster.request_timeout
                )
            self._install(cluster, client)

    def environments_of(self, cluster: str) -> list[EnvironmentConfig]:
        """The configured environments synced to ``cluster``."""
        return [env for env in self.settings.environments if env.cluster == cluster]

    def _install(self, cluster: ClusterConfig, client: KubeClient) -> None:
        """Make ``client`` the cluster's connection: a watch cache, an engine (and one per tenant
        service account, every request made as that identity), the Environment objects."""
        name = cluster.name
        self.metrics.observe_requests_of(name, client)
        if self.settings.sharding.enabled:  # the API server's audit log tells the replicas apart
            client.api.user_agent = f"{USER_AGENT} replica/{self.settings.leader_election.identity}"
        self.clients[name] = client
        cache = LiveCache(client)
        self.caches[name] = cache
        engine = Engine(client, cache=cache, renderer=self.renderer)
        engine.inventory.namespace = self.settings.inventory_namespace
        engine.on_drift = self.on_drift
        engine.corrector.permit = self.permit
        self.engines[name] = engine
        # inventories, watches and the Environment objects stay the daemon's own identity
        for env in self.environments_of(name):
            if env.service_account and engine_key(env) not in self.engines:
                tenant = Engine(
                    client.impersonating(env.impersonated_user),
                    inventory=engine.inventory,
                    cache=cache,
                    renderer=self.renderer,
                )
                tenant.on_drift = self.on_drift
                tenant.corrector.permit = self.permit
                self.engines[engine_key(env)] = tenant
        self.environment_objects[name] = EnvironmentObjects(client, self.settings.inventory_namespace)

    async def _uninstall(self, name: str) -> None:
        """Close and forget the cluster's connection (its engines, cache and client)."""
        keys = [name] + [engine_key(env) for env in self.environments_of(name) if env.service_account]
        engines = [self.engines.pop(key) for key in keys if key in self.engines]
        cache, client = self.caches.pop(name, None), self.clients.pop(name, None)
        self.environment_objects.pop(name, None)
        for engine in engines:
            await engine.close()
        if cache is not None:
            await cache.close()
        if client is not None:
            await client.close()

    async def install_crds(self) -> None:
        """Apply reconciler's CRDs to every connected cluster (``install_crds``); a refusal is logged."""
        for name, client in list(self.clients.items()):
            await self._install_crds(name, client)

    async def _install_crds(self, name: str, client: KubeClient) -> None:
        if not self.settings.install_crds:
            return
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

    def set_permit(self, permit: Permit) -> None:
        """Run every drift correction (of every engine, present and future) under ``permit``."""
        self.permit = permit
        for engine in self.engines.values():
            engine.corrector.permit = permit

    async def close(self) -> None:
        """Close every connection."""
        for name in list(self.clients):
            await self._uninstall(name)

    # -- kubeconfigs held in Secrets -------------------------------------------------------------
    async def follow_secret(self, cluster: ClusterConfig) -> None:
        """Read ``cluster``'s kubeconfig Secret from the home cluster, connect with it, and watch it:
        a changed kubeconfig replaces the connection; a missing, unreadable or refused one keeps the
        connection in use (if any) and is reported, never logged with its content."""
        ref = cluster.kubeconfig_secret
        assert ref is not None
        while True:
            home = self.clients.get(self.settings.home_cluster)
            try:
                if home is None:
                    raise KubeError("home cluster", "not connected")
                body = await home.get("v1", "Secret", ref.namespace, ref.name)
                await self._use_secret(cluster, body)
                if body is not None:
                    await self._watch_secret(cluster, home, body)
            except KubeError as exc:
                self._secret_problem(cluster, f"cannot read {ref}: {exc}")
            await asyncio.sleep(SECRET_RETRY)

    async def _watch_secret(self, cluster: ClusterConfig, home: KubeClient, body: Body) -> None:
        ref = cluster.kubeconfig_secret
        assert ref is not None
        info = await home.resource("v1", "Secret")
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        stream = home.watch(
            info, version, namespace=ref.namespace, field_selector=f"metadata.name={ref.name}"
        )
        async for event, changed in stream:
            if event in ("ADDED", "MODIFIED"):
                await self._use_secret(cluster, changed)
            elif event == "DELETED":
                await self._use_secret(cluster, None)

    def _secret_problem(self, cluster: ClusterConfig, problem: str) -> None:
        if self.secret_errors.get(cluster.name) != problem:
            kept = " (the connection in use is kept)" if cluster.name in self.clients else ""
            log.error("kubeconfig Secret not used" + kept, cluster=cluster.name, error=problem)
        self.secret_errors[cluster.name] = problem
        if cluster.name not in self.clients:
            self.errors[cluster.name] = problem

    async def _use_secret(self, cluster: ClusterConfig, body: Body | None) -> None:
        """Connect (or reconnect) ``cluster`` with the kubeconfig in ``body`` when it changed."""
        ref = cluster.kubeconfig_secret
        assert ref is not None
        encoded = ((body or {}).get("data") or {}).get(ref.key)
        if body is None or not isinstance(encoded, str):
            self._secret_problem(cluster, f"{ref}: " + ("not found" if body is None else "no such key"))
            return
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self._secret_problem(cluster, f"{ref}: not base64")
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digests.get(cluster.name):
            return
        temp_dir = self.settings.cache_dir / "kubeconfigs" / cluster.name / digest[:16]
        try:
            client = await KubeClient.from_kubeconfig_data(
                data, cluster.context, temp_dir, request_timeout=cluster.request_timeout
            )
        except KubeconfigError as exc:
            self._secret_problem(cluster, f"{ref}: {exc}")
            return
        replacing = cluster.name in self.clients
        if replacing:
            self.on_replaced(cluster.name)  # stops the syncs running with the old connection
            await self._uninstall(cluster.name)
        self._digests[cluster.name] = digest
        self.secret_errors.pop(cluster.name, None)
        self._install(cluster, client)
        log.info("cluster connected with its kubeconfig Secret", cluster=cluster.name, secret=str(ref))
        await self._install_crds(cluster.name, client)
        if replacing:
            self.on_up(cluster.name)

    # -- probes ------------------------------------------------------------------------------------
    async def probe(self, cluster: ClusterConfig) -> None:
        """Probe ``cluster`` for ever: ``GET /version`` every ``probe_interval`` (every 0.5 s while it
        does not answer), one attempt bounded by its request timeout."""
        while True:
            await self.probe_once(cluster)
            await asyncio.sleep(
                DOWN_PROBE_INTERVAL if cluster.name in self.errors else cluster.probe_interval
            )

    async def probe_once(self, cluster: ClusterConfig) -> None:
        """One probe of ``cluster``; calls ``on_down``/``on_up`` when its reachability changed."""
        name = cluster.name
        client = self.clients.get(name)
        if client is None:
            error = self.secret_errors.get(name) or self.errors.get(name) or "not connected"
        else:
            try:
                await client.request(
                    "GET", "/version", subject=f"cluster {name}", attempts=1, timeout=cluster.request_timeout
                )
                error = ""
            except KubeError as exc:
                error = exc.api_message  # said as "cluster NAME: ..." wherever it is shown
        self._set_error(name, error)

    def _set_error(self, name: str, error: str) -> None:
        was_down = name in self.errors
        if error:
            self.errors[name] = error
            self.metrics.cluster_up.labels(name).set(0)
            if not was_down:
                log.warning("cluster unreachable", cluster=name, error=error)
                self.on_down(name)
        elif was_down:
            self.errors.pop(name, None)
            self.metrics.cluster_up.labels(name).set(1)
            log.info("cluster reachable", cluster=name)
            self.on_up(name)
        else:
            self.metrics.cluster_up.labels(name).set(1)

    def unreachable(self, name: str) -> str:
        """Why ``name`` cannot be used now ("" when it answers)."""
        return self.errors.get(name, "")

    def degraded(self) -> list[str]:
        """Every cluster that cannot be used now, or whose kubeconfig Secret was not used, with why."""
        found = [f"cluster {name}: {error}" for name, error in sorted(self.errors.items())]
        found += [
            f"cluster {name}: {error}"
            for name, error in sorted(self.secret_errors.items())
            if name not in self.errors
        ]
        return found


async def close_quietly(clusters: Clusters) -> None:
    """Close every connection, whatever fails."""
    with contextlib.suppress(Exception):
        await clusters.close()


__all__ = ["Clusters", "close_quietly"]
