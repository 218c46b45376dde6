"""The daemon's Prometheus metrics: every definition, on one registry, and how results update them.

``Metrics`` owns a ``CollectorRegistry`` (``daemon.metrics.registry``) that ``/metrics`` exposes. The
daemon feeds it derived data only (a ``SyncResult`` and its ``ChangeSet``, drift entries, fetch
outcomes), so a number on a dashboard always means the same thing as the status API and the logs.

Cardinality is bounded by configuration, never by Git content or traffic: labels are environments,
clusters, stages, actions, kinds, verbs, codes, providers and results. No label names an object, and
a revision appears only in ``reconciler_environment_revision_info`` (one series per environment: the
previous revision's series is removed when it changes). Every metric is documented in
``docs/metrics.md``; a test keeps the dashboard and the alert rules to names exported here.

**Hook for promotion metrics:** ``reconciler.promotion`` registers its own metrics
(``reconciler_promotions{phase}``, approvals received, promotion duration) on ``Metrics.registry``,
the same registry ``/metrics`` serves; nothing else is needed here (see ``register``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler import __version__
from reconciler.health import HealthStatus
from reconciler.objects import Action, ChangeSetEntry
from reconciler.sync import STAGES, SyncResult

if TYPE_CHECKING:
    from reconciler.kube.client import KubeClient

SYNC_STATUSES = ("Synced", "OutOfSync", "Unknown")
HEALTH_STATUSES = tuple(status.value for status in HealthStatus)
CONDITIONS = ("Ready", "Reconciling", "Stalled")
C = TypeVar("C", bound=Collector)

_SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """Every metric of the daemon, on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # no ``*_created`` series: they would double the series count and nothing here needs them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        self._build_process(self.registry)
        self._build_git(self.registry)
        self._build_environment_state(self.registry)
        self._build_sync_results(self.registry)
        self._build_drift(self.registry)
        self._build_traffic(self.registry)
        self._revisions: dict[str, str] = {}

    # -- the metric families ---------------------------------------------------------------------
    def _build_process(self, r: CollectorRegistry) -> None:
        """This replica: its version, and whether it leads."""
        self.build_info = Info("reconciler_build", "The running reconciler's version.", registry=r)
        self.build_info.info({"version": __version__})
        self.leader = Gauge("reconciler_leader", "1 while this replica is the leader.", registry=r)

    def _build_git(self, r: CollectorRegistry) -> None:
        """The Git source: fetches, their duration, the last success."""
        self.fetches = Counter(
            "reconciler_git_fetches_total", "Git fetches by result (success, error).", ["result"], registry=r
        )
        self.fetch_seconds = Histogram(
            "reconciler_git_fetch_duration_seconds", "Duration of successful Git fetches.", registry=r
        )
        self.last_fetch = Gauge(
            "reconciler_git_last_success_timestamp_seconds",
            "Unix time of the last successful Git fetch (0: never).",
            registry=r,
        )
        self.unverified_commits = Counter(
            "reconciler_unverified_commits_total",
            "Fetched branch heads refused as not signed by an allowed signer (once per commit).",
            registry=r,
        )
        self.head_verified = Gauge(
            "reconciler_git_head_verified",
            "1 when the fetched branch head is a verified commit (or verification is off), 0 when refused.",
            registry=r,
        )

    def _build_environment_state(self, r: CollectorRegistry) -> None:
        """Environments' current state (one series per environment and value)."""
        self.sync_status = Gauge(
            "reconciler_environment_sync_status",
            "1 for the environment's current sync status (Synced, OutOfSync, Unknown), 0 for the others.",
            ["environment", "status"],
            registry=r,
        )
        self.health_status = Gauge(
            "reconciler_environment_health_status",
            "1 for the environment's current health, 0 for the others.",
            ["environment", "status"],
            registry=r,
        )
        self.condition = Gauge(
            "reconciler_environment_condition",
            "1 for the environment's current condition (Ready, Reconciling, Stalled), 0 for the others.",
            ["environment", "condition"],
            registry=r,
        )
        self.revision_info = Gauge(
            "reconciler_environment_revision_info",
            "Always 1; the revision label is the last revision applied to the environment.",
            ["environment", "revision"],
            registry=r,
        )
        self.last_success = Gauge(
            "reconciler_environment_last_sync_success_timestamp_seconds",
            "Unix time of the environment's last successful (Ready) sync.",
            ["environment"],
            registry=r,
        )
        self.prune_blocked = Gauge(
            "reconciler_environment_prune_blocked",
            "1 while the prune circuit breaker holds back the environment's prune.",
            ["environment"],
            registry=r,
        )
        self.inventory_objects = Gauge(
            "reconciler_environment_inventory_objects",
            "Objects in the environment's inventory after its last sync.",
            ["environment"],
            registry=r,
        )

    def _build_sync_results(self, r: CollectorRegistry) -> None:
        """What syncs did: results, durations (whole and per stage), objects, prune blocks, violations."""
        self.syncs = Counter(
            "reconciler_syncs_total",
            "Syncs by environment and result (the status reason: Succeeded, Progressing, RenderFailed, ...).",
            ["environment", "result"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "reconciler_sync_duration_seconds",
            "Duration of a whole sync (render to health).",
            ["environment"],
            registry=r,
            buckets=_SYNC_BUCKETS,
        )
        self.stage_seconds = Histogram(
            "reconciler_sync_stage_duration_seconds",
            "Duration of each stage of a sync: render, plan, validate, apply, health, prune.",
            ["environment", "stage"],
            registry=r,
            buckets=_STAGE_BUCKETS,
        )
        self.objects = Counter(
            "reconciler_sync_objects_total",
            "Objects handled by syncs, by action (created, configured, unchanged, deleted, skipped, failed) "
            "and kind.",
            ["environment", "action", "kind"],
            registry=r,
        )
        self.prune_blocks = Counter(
            "reconciler_prune_blocked_total",
            "Syncs whose prune the circuit breaker blocked.",
            ["environment"],
            registry=r,
        )
        self.policy_violations = Counter(
            "reconciler_policy_violations_total",
            "Objects of refused revisions that were outside the environment's access policy, by the rule "
            "they broke (reserved, namespace, cluster-scoped).",
            ["environment", "rule"],
            registry=r,
        )

    def _build_drift(self, r: CollectorRegistry) -> None:
        """Drift corrections from watch events, and the fights left alone."""
        self.drift_corrections = Counter(
            "reconciler_drift_corrections_total",
            "Drift corrections from watch events, by kind and result (corrected, failed).",
            ["environment", "kind", "result"],
            registry=r,
        )
        self.drift_fights = Counter(
            "reconciler_drift_fights_total",
            "Drift left uncorrected because another writer keeps changing the object back.",
            ["environment", "kind"],
            registry=r,
        )

    def _build_traffic(self, r: CollectorRegistry) -> None:
        """HTTP and Kubernetes: webhook requests, and the Events the daemon records."""
        self.webhook_requests = Counter(
            "reconciler_webhook_requests_total",
            "Webhook requests by provider and result.",
            ["provider", "result"],
            registry=r,
        )
        self.cluster_up = Gauge(
            "reconciler_cluster_up",
            "1 while the cluster answers its probe, 0 while it does not (or is not connected).",
            ["cluster"],
            registry=r,
        )
        self.kube_request_duration = Histogram(
            "reconciler_kube_request_duration_seconds",
            "Kubernetes API request latency by cluster and verb (watches excluded).",
            ["cluster", "verb"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "reconciler_events_total",
            "Kubernetes Events by reason and outcome (created, aggregated, throttled, failed).",
            ["reason", "outcome"],
            registry=r,
        )

    # -- hook: promotion metrics ----------------------------------------------------------------
    def register(self, collector: C) -> C:
        """Register an extra collector (such as the promotion metrics) on the daemon's registry.

        Metrics created with ``registry=daemon.metrics.registry`` are registered already; this is for
        custom ``Collector`` objects.
        """
        self.registry.register(collector)
        return collector

    def count_requests_of(self, clients: Mapping[str, KubeClient]) -> None:
        """Export the request counters of these clients (the daemon's, filled as clusters connect)."""
        self.registry.register(_KubeRequests(clients))

    def observe_requests_of(self, cluster: str, client: KubeClient) -> None:
        """Time every request ``client`` makes (``reconciler_kube_request_duration_seconds``)."""
        histogram = self.kube_request_duration

        def observe(verb: str, _status: int, seconds: float) -> None:
            histogram.labels(cluster, verb).observe(seconds)

        client.observe = observe

    # -- updates ---------------------------------------------------------------------------------
    def environment_known(self, environment: str) -> None:
        """An environment this replica does not sync (yet): Unknown, Reconciling, no revision. Set at
        start and when leadership is lost, so only the leader exports an environment's real state and
        alerts can take the ``max`` over replicas."""
        previous = self._revisions.pop(environment, None)
        if previous is not None:
            self.revision_info.remove(environment, previous)
        self._set_one(self.sync_status, environment, SYNC_STATUSES, "Unknown")
        self._set_one(self.health_status, environment, HEALTH_STATUSES, HealthStatus.UNKNOWN.value)
        self._set_one(self.condition, environment, CONDITIONS, "Reconciling")
        self.prune_blocked.labels(environment=environment).set(0)

    def fetched(self, seconds: float) -> None:
        """A successful Git fetch."""
        self.fetches.labels(result="success").inc()
        self.fetch_seconds.observe(seconds)
        self.last_fetch.set_to_current_time()

    def fetch_failed(self) -> None:
        """A failed Git fetch."""
        self.fetches.labels(result="error").inc()

    def synced(self, result: SyncResult, seconds: float) -> None:
        """Everything one sync did, from its result."""
        env = result.environment
        self.syncs.labels(environment=env, result=result.reason or result.condition).inc()
        self.sync_seconds.labels(environment=env).observe(seconds)
        for stage in STAGES:
            if stage in result.durations:
                self.stage_seconds.labels(environment=env, stage=stage).observe(result.durations[stage])
        for entry in result.changeset.entries:
            self.objects.labels(environment=env, action=entry.action.value, kind=entry.key.kind).inc()
        self._set_one(self.sync_status, env, SYNC_STATUSES, "Synced" if result.synced else "OutOfSync")
        self._set_one(self.health_status, env, HEALTH_STATUSES, result.health.value)
        self._set_one(self.condition, env, CONDITIONS, result.condition)
        self.prune_blocked.labels(environment=env).set(1 if result.prune_blocked else 0)
        if result.prune_blocked:
            self.prune_blocks.labels(environment=env).inc()
        for violation in result.violations:
            self.policy_violations.labels(environment=env, rule=violation.rule).inc()
        if result.inventory_size is not None:
            self.inventory_objects.labels(environment=env).set(result.inventory_size)
        if result.ok:
            self.last_success.labels(environment=env).set(time.time())

    def applied_revision(self, environment: str, revision: str) -> None:
        """The environment's last applied revision (the previous one's series is removed)."""
        previous = self._revisions.get(environment)
        if previous == revision or not revision:
            return
        if previous is not None:
            self.revision_info.remove(environment, previous)
        self.revision_info.labels(environment=environment, revision=revision).set(1)
        self._revisions[environment] = revision

    def drift(self, environment: str, entry: ChangeSetEntry) -> None:
        """One drift outcome recorded by the engine."""
        kind = entry.key.kind
        if entry.action == Action.SKIPPED:
            self.drift_fights.labels(environment=environment, kind=kind).inc()
        elif entry.action == Action.FAILED:
            self.drift_corrections.labels(environment=environment, kind=kind, result="failed").inc()
        else:
            self.drift_corrections.labels(environment=environment, kind=kind, result="corrected").inc()

    @staticmethod
    def _set_one(gauge: Gauge, environment: str, values: tuple[str, ...], current: str) -> None:
        for value in values:
            gauge.labels(environment, value).set(1 if value == current else 0)


class _KubeRequests(Collector):
    """Kubernetes API requests made by this process, by cluster, verb and status code."""

    def __init__(self, clients: Mapping[str, KubeClient]) -> None:
        self.clients = clients

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "reconciler_kube_requests",
            "Kubernetes API requests by cluster, verb and code (0: no answer).",
            labels=["cluster", "verb", "code"],
        )
        for cluster, client in self.clients.items():
            for (verb, code), count in sorted(client.request_counts().items()):
                family.add_metric([cluster, verb, str(code)], count)
        yield family
