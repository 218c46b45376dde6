"""The daemon's typed configuration: a YAML file plus environment-variable overrides, validated at start.

Policy lives here, not in the environments repository, so a committer cannot change what the daemon is
allowed to do (prune, render options, webhook secrets). Secrets are never written in the file itself:
they are read from files (``secret_file``, ``token_file``, ``ssh_key_file``) or from environment
variables (``RECONCILER_WEBHOOK_<PROVIDER>_SECRET``, ``RECONCILER_GIT_TOKEN``).

This module owns the frozen result types the daemon reads (``Settings`` and its parts), ``load`` and
``parse``. The file is validated by the pydantic models of ``reconciler.config_models`` (strict types, no
unknown field, references between sections) and the ``promotions:`` section by
``reconciler.promotion.policy``; every problem is one line of the ``ConfigError``, naming the field
(``environments[1].path: ...``) and saying what is expected.
Environment overrides (``reconciler.config_models.Overrides``, read with pydantic-settings):
``RECONCILER_LISTEN``, ``RECONCILER_LOG_LEVEL``, ``RECONCILER_CACHE_DIR``,
``RECONCILER_REPOSITORY_URL``, ``RECONCILER_REPOSITORY_BRANCH``, ``RECONCILER_POLL_INTERVAL``,
``RECONCILER_LEADER_ELECTION`` (true/false), ``RECONCILER_IDENTITY`` (else ``POD_NAME``, else ``HOSTNAME``
when ``leader_election.identity`` is not set), ``RECONCILER_WEBHOOK_<PROVIDER>_SECRET``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.config_fields import ConfigError, validate
from reconciler.config_models import (
    PROVIDERS,
    SECTIONS,
    ClusterModel,
    EnvironmentModel,
    Overrides,
    SettingsModel,
)
from reconciler.promotion import policy
from reconciler.promotion.policy import PromotionSettings
from reconciler.source.verify import VerifyConfig

__all__ = [
    "PROVIDERS",
    "ClusterConfig",
    "ConfigError",
    "Credentials",
    "EnvironmentConfig",
    "LeaderElectionConfig",
    "RepositoryConfig",
    "SecretKey",
    "Settings",
    "ShardingConfig",
    "WebhookConfig",
    "load",
    "parse",
]


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the Git remote (all optional)."""

    token_file: Path | None = None
    username: str = "x-access-token"
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None

    def token(self) -> str:
        """The HTTPS token, from RECONCILER_GIT_TOKEN or token_file ("" when none)."""
        if os.environ.get("RECONCILER_GIT_TOKEN"):
            return os.environ["RECONCILER_GIT_TOKEN"]
        if self.token_file:
            return self.token_file.read_text(encoding="utf-8").strip()
        return ""


@dataclass(frozen=True)
class RepositoryConfig:
    """The environments repository."""

    url: str
    branch: str = "main"
    poll_interval: float = 60.0
    poll_jitter: float = 0.1
    credentials: Credentials = field(default_factory=Credentials)
    # only commits signed by these signers are synced (see reconciler.source.verify)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


@dataclass(frozen=True)
class SecretKey:
    """One key of a Secret (on the daemon's home cluster)."""

    namespace: str
    name: str
    key: str = "kubeconfig"

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name} key {self.key!r}"


@dataclass(frozen=True)
class ClusterConfig:
    """A target cluster: in-cluster service account, a kubeconfig file and context, or a kubeconfig in a
    Secret of the home cluster; its probe interval, request timeout and concurrent syncs (0: workers)."""

    name: str
    in_cluster: bool = False
    kubeconfig: Path | None = None
    context: str | None = None
    kubeconfig_secret: SecretKey | None = None
    probe_interval: float = 5.0
    request_timeout: float = 30.0
    max_concurrent_syncs: int = 0


@dataclass(frozen=True)
class EnvironmentConfig:
    """One environment: a kustomize directory of the repository synced to one cluster."""

    name: str
    path: str
    cluster: str
    prune: bool = True
    max_prune_share: float = 0.5
    prune_protected_kinds: bool = False
    health_timeout: float = 300.0
    allow_remote_bases: bool = False
    allow_helm: bool = False
    allow_plugins: bool = False
    # environments that must be Ready at their current inputs before this one syncs (CRDs, namespaces)
    depends_on: tuple[str, ...] = ()
    # what its commits may change (reconciler.tenancy): allowed namespaces (globs; None: the namespaces
    # its own render creates), allowed cluster-scoped kinds, and the service account to act as
    namespaces: tuple[str, ...] | None = None
    cluster_scoped: tuple[str, ...] = ()
    service_account: str = ""  # "namespace/name"; every request of its syncs is made as that identity

    @property
    def impersonated_user(self) -> str:
        """The Kubernetes user name of ``service_account`` ("" when none)."""
        if not self.service_account:
            return ""
        namespace, name = self.service_account.split("/", 1)
        return f"system:serviceaccount:{namespace}:{name}"


@dataclass(frozen=True)
class WebhookConfig:
    """Push webhooks: one secret per provider, and limits."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    insecure_no_secret: bool = False
    max_body_bytes: int = 1024 * 1024
    body_timeout: float = 10.0
    rate_limit: int = 60
    rate_window: float = 60.0

    def secret(self, provider: str) -> str:
        """The provider's secret ("" when none is configured)."""
        return self.secrets.get(provider, "")


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Lease-based leader election: only the leader writes to clusters.

    As in client-go: a follower takes the Lease once it has seen it unrenewed for ``lease_duration``; the
    leader renews every ``renew_interval`` and stops leading when it could not renew for
    ``renew_deadline`` (shorter than ``lease_duration``, so it has stopped before anyone takes over).
    ``identity`` is stable across restarts (the pod name), so a restarted replica takes its own Lease
    back at once.
    """

    enabled: bool = True
    cluster: str = ""
    namespace: str = "reconciler-system"
    lease_name: str = "reconciler-leader"
    lease_duration: float = 8.0
    renew_deadline: float = 5.0
    renew_interval: float = 1.0
    identity: str = ""


@dataclass(frozen=True)
class ShardingConfig:
    """Scale-out: every replica holds a member Lease, environments are assigned over the live members
    (``reconciler.sharding.assignment``) and each is written only under its claim, a per-environment
    Lease held while it is worked on (``reconciler.sharding.claims``). Leases live in
    ``leader_election.namespace`` on the home cluster; a replica's identity is the leader election's."""

    enabled: bool = False
    group: str = "default"
    lease_duration: float = 10.0
    renew_interval: float = 2.0
    safety_margin: float = 2.0


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs to start."""

    repository: RepositoryConfig
    clusters: tuple[ClusterConfig, ...]
    environments: tuple[EnvironmentConfig, ...]
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    listen: str = "127.0.0.1:8080"
    cache_dir: Path = Path("/tmp/reconciler")  # noqa: S108 - overridden in every real deployment
    log_level: str = "info"
    kustomize: Path | None = None
    resync_interval: float = 600.0
    workers: int = 4
    inventory_namespace: str = "reconciler-system"
    # apply reconciler's own CRDs (reconciler/crds) at start; false where deploy/ installs them and the
    # daemon's identity may not write CustomResourceDefinitions
    install_crds: bool = True
    promotions: PromotionSettings = field(default_factory=PromotionSettings)

    @property
    def home_cluster(self) -> str:
        """The cluster the daemon keeps its own state on: its Lease, promotions, kubeconfig Secrets."""
        return self.leader_election.cluster or self.clusters[0].name

    def cluster(self, name: str) -> ClusterConfig:
        """The configured cluster ``name``."""
        return next(c for c in self.clusters if c.name == name)

    @property
    def listen_host(self) -> str:
        """Host part of ``listen``."""
        return self.listen.rsplit(":", 1)[0] or "0.0.0.0"  # noqa: S104

    @property
    def listen_port(self) -> int:
        """Port part of ``listen``."""
        return int(self.listen.rsplit(":", 1)[1])


def _cluster(model: ClusterModel) -> ClusterConfig:
    secret = model.kubeconfig_secret
    return ClusterConfig(
        model.name,
        model.in_cluster,
        _file(model.kubeconfig),
        model.context,
        SecretKey(secret.namespace, secret.name, secret.key) if secret is not None else None,
        model.probe_interval,
        model.request_timeout,
        model.max_concurrent_syncs or 0,
    )


def _file(value: str | None) -> Path | None:
    return Path(value) if value else None


def _environment(model: SettingsModel, env: EnvironmentModel) -> EnvironmentConfig:
    return EnvironmentConfig(
        name=env.name,
        path=env.path,
        cluster=model.cluster_of(env),
        prune=env.prune,
        max_prune_share=env.max_prune_share,
        prune_protected_kinds=env.prune_protected_kinds,
        health_timeout=env.health_timeout,
        allow_remote_bases=env.allow_remote_bases,
        allow_helm=env.allow_helm,
        allow_plugins=env.allow_plugins,
        depends_on=tuple(env.depends_on),
        namespaces=None if env.namespaces is None else tuple(env.namespaces),
        cluster_scoped=tuple(env.cluster_scoped),
        service_account=env.service_account or "",
    )


def _repository(model: SettingsModel) -> RepositoryConfig:
    section, credentials = model.repository, model.repository.credentials
    return RepositoryConfig(
        url=section.url,
        branch=section.branch,
        poll_interval=section.poll_interval,
        poll_jitter=section.poll_jitter,
        credentials=Credentials(
            token_file=_file(credentials.token_file),
            username=credentials.username,
            ssh_key_file=_file(credentials.ssh_key_file),
            known_hosts_file=_file(credentials.known_hosts_file),
        ),
        verify=VerifyConfig(section.verify.signers, _file(section.verify.gpg_public_keys))
        if section.verify
        else VerifyConfig(),
    )


def _webhooks(model: SettingsModel, insecure_no_webhook_secret: bool) -> WebhookConfig:
    section = model.webhooks
    return WebhookConfig(
        secrets=dict(section.secrets),
        insecure_no_secret=section.insecure_no_secret or insecure_no_webhook_secret,
        max_body_bytes=section.max_body_bytes,
        body_timeout=section.body_timeout,
        rate_limit=section.rate_limit,
        rate_window=section.rate_window,
    )


def _leader_election(model: SettingsModel, overrides: Overrides) -> LeaderElectionConfig:
    section = model.leader_election
    renew_interval, renew_deadline = section.timings
    # stable across restarts of the same pod, so a restarted replica takes its own Lease back at once
    identity = overrides.identity or section.identity or overrides.pod_name or overrides.hostname
    return LeaderElectionConfig(
        enabled=section.enabled and not model.sharding.enabled,  # sharding replaces it
        cluster=section.cluster or model.clusters[0].name,
        namespace=section.namespace,
        lease_name=section.lease_name,
        lease_duration=section.lease_duration,
        renew_deadline=renew_deadline,
        renew_interval=renew_interval,
        identity=identity or f"{socket.gethostname()}-{os.getpid()}",
    )


def _environment_names(raw: Mapping[str, Any]) -> Iterable[str]:
    """The names the promotion policy may refer to (read before validation, so that the whole file is
    validated in one pass)."""
    items = raw.get("environments")
    if not isinstance(items, list):
        return []
    return [str(item["name"]) for item in items if isinstance(item, dict) and "name" in item]


def parse(
    raw: Mapping[str, Any],
    base: Path,
    environ: Mapping[str, str] | None = None,
    *,
    insecure_no_webhook_secret: bool = False,
) -> Settings:
    """Validate a configuration mapping (``base`` resolves relative file paths).

    ``insecure_no_webhook_secret`` (``reconciler run --insecure-no-webhook-secret``) accepts a
    configuration without any webhook secret, as ``webhooks.insecure_no_secret: true`` does.
    """
    env = os.environ if environ is None else environ
    overrides = Overrides.read(env)
    data = overrides.apply(raw)
    context = {
        **policy.context(base, _environment_names(data), env),
        "webhook_secrets": overrides.webhook_secrets(),
        "insecure_no_webhook_secret": insecure_no_webhook_secret,
    }
    model = validate(SettingsModel, data, "config", context, SECTIONS)
    cache_dir = Path(model.cache_dir)
    return Settings(
        repository=_repository(model),
        clusters=tuple(_cluster(c) for c in model.clusters),
        environments=tuple(_environment(model, e) for e in model.environments),
        webhooks=_webhooks(model, insecure_no_webhook_secret),
        leader_election=_leader_election(model, overrides),
        sharding=ShardingConfig(
            model.sharding.enabled,
            model.sharding.group,
            model.sharding.lease_duration,
            model.sharding.renew_interval,
            model.sharding.safety_margin,
        ),
        listen=model.listen,
        cache_dir=cache_dir if cache_dir.is_absolute() else (base / cache_dir),
        log_level=model.log_level,
        kustomize=_file(model.kustomize),
        resync_interval=model.resync_interval,
        workers=model.workers,
        inventory_namespace=model.inventory_namespace,
        install_crds=model.install_crds,
        promotions=policy.build(model.promotions),
    )


def load(
    path: Path, environ: Mapping[str, str] | None = None, *, insecure_no_webhook_secret: bool = False
) -> Settings:
    """Read and validate a configuration file (see ``parse``)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse(raw, path.resolve().parent, environ, insecure_no_webhook_secret=insecure_no_webhook_secret)
