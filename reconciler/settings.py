"""The daemon's typed configuration: a YAML file plus environment-variable overrides, validated at start.

Policy lives here, not in the environments repository, so a committer cannot change what the daemon is
allowed to do (prune, render options, webhook secrets). Secrets are never written in the file itself:
they are read from files (``secret_file``, ``token_file``, ``ssh_key_file``) or from environment
variables (``RECONCILER_WEBHOOK_<PROVIDER>_SECRET``, ``RECONCILER_GIT_TOKEN``).

Every validation error names the field (``environments[1].path: ...``) and says what is expected.
Environment overrides: ``RECONCILER_LISTEN``, ``RECONCILER_LOG_LEVEL``, ``RECONCILER_CACHE_DIR``,
``RECONCILER_REPOSITORY_URL``, ``RECONCILER_REPOSITORY_BRANCH``, ``RECONCILER_POLL_INTERVAL``,
``RECONCILER_LEADER_ELECTION`` (true/false), ``RECONCILER_IDENTITY`` (else ``POD_NAME``, else ``HOSTNAME``
when ``leader_election.identity`` is not set).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.config_fields import ConfigError, boolean, expect, mapping, number, secret, unknown
from reconciler.promotion.policy import PromotionSettings
from reconciler.promotion.policy import parse as parse_promotions
from reconciler.promotion.sshsig import AllowedSigner, parse_allowed_signers
from reconciler.source.verify import VerifyConfig

PROVIDERS = ("github", "gitlab", "gitea", "bitbucket", "generic")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")


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
class ClusterConfig:
    """A target cluster: in-cluster service account, or a kubeconfig and context."""

    name: str
    in_cluster: bool = False
    kubeconfig: Path | None = None
    context: str | None = None


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
class Settings:
    """Everything the daemon needs to start."""

    repository: RepositoryConfig
    clusters: tuple[ClusterConfig, ...]
    environments: tuple[EnvironmentConfig, ...]
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
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
    def listen_host(self) -> str:
        """Host part of ``listen``."""
        return self.listen.rsplit(":", 1)[0] or "0.0.0.0"  # noqa: S104

    @property
    def listen_port(self) -> int:
        """Port part of ``listen``."""
        return int(self.listen.rsplit(":", 1)[1])


def _path(raw: Mapping[str, Any], key: str, where: str, base: Path) -> Path | None:
    value = raw.get(key)
    if value is None:
        return None
    expect(value, str, f"{where}.{key}", "a file path")
    path = (base / value).resolve() if not os.path.isabs(value) else Path(value)
    if not path.exists():
        raise ConfigError(f"{where}.{key}: {path} does not exist")
    return path


def _verify(value: Any, base: Path) -> VerifyConfig:
    """``repository.verify``: an OpenSSH allowed_signers file and/or a file of allowed OpenPGP keys."""
    where = "repository.verify"
    section = mapping(value, where)
    unknown(section, {"allowed_signers", "gpg_public_keys"}, where)
    signers = _path(section, "allowed_signers", where, base)
    keys = _path(section, "gpg_public_keys", where, base)
    if value is not None and signers is None and keys is None:
        raise ConfigError(f"{where}: set allowed_signers (SSH) and/or gpg_public_keys (OpenPGP)")
    parsed: tuple[AllowedSigner, ...] = ()
    if signers is not None:
        try:
            parsed = tuple(parse_allowed_signers(signers.read_text(encoding="utf-8"), str(signers)))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}.allowed_signers: {exc}") from None
        if not parsed:
            raise ConfigError(f"{where}.allowed_signers: {signers} lists no signer")
    return VerifyConfig(parsed, keys)


def _webhook_secret(raw: Mapping[str, Any], provider: str, base: Path, environ: Mapping[str, str]) -> str:
    variable = f"RECONCILER_WEBHOOK_{provider.upper()}_SECRET"
    from_env = environ.get(variable)
    if from_env:
        return secret(from_env, variable)
    where = f"webhooks.{provider}"
    section = mapping(raw.get(provider), where)
    unknown(section, {"secret_file"}, where)
    path = _path(section, "secret_file", where, base)
    if path is None:
        return ""
    return secret(path.read_text(encoding="utf-8").strip(), f"{where}.secret_file")


_GLOB = re.compile(r"^[a-z0-9*?\[\]-]{1,63}$")
_KIND = re.compile(r"^(\*|([a-z0-9.-]+/)?[A-Z][A-Za-z0-9]*)$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def _tenancy(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An environment's access policy fields: namespaces, cluster_scoped, service_account."""
    fields: dict[str, Any] = {}
    if item.get("namespaces") is not None:
        globs = expect(item["namespaces"], list, f"{where}.namespaces", "a list of namespace globs")
        for index, glob in enumerate(globs):
            if not isinstance(glob, str) or not _GLOB.fullmatch(glob):
                raise ConfigError(
                    f"{where}.namespaces[{index}]: expected a namespace name or glob (team-a, team-a-*), "
                    f"got {glob!r}"
                )
        fields["namespaces"] = tuple(globs)
    kinds = expect(item.get("cluster_scoped") or [], list, f"{where}.cluster_scoped", "a list of kinds")
    for index, kind in enumerate(kinds):
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ConfigError(
                f"{where}.cluster_scoped[{index}]: expected a kind (ClusterRole), group/Kind "
                f"(rbac.authorization.k8s.io/ClusterRole) or *, got {kind!r}"
            )
    fields["cluster_scoped"] = tuple(kinds)
    account = item.get("service_account")
    if account is not None:
        if not isinstance(account, str) or not _SERVICE_ACCOUNT.fullmatch(account):
            raise ConfigError(
                f"{where}.service_account: expected NAMESPACE/NAME of a ServiceAccount, got {account!r}"
            )
        fields["service_account"] = account
    return fields


def _check_dependencies(environments: list[EnvironmentConfig]) -> None:
    """``depends_on`` names other configured environments of the same cluster, without cycles."""
    by_name = {e.name: e for e in environments}
    for index, env in enumerate(environments):
        where = f"environments[{index}].depends_on"
        for dependency in env.depends_on:
            other = by_name.get(dependency)
            if other is None or dependency == env.name:
                raise ConfigError(f"{where}: {dependency!r} is not another configured environment")
            if other.cluster != env.cluster:
                raise ConfigError(f"{where}: {dependency!r} syncs to another cluster ({other.cluster!r})")

    # depth-first, each environment explored once (a dense graph stays linear in its edges)
    names = [e.name for e in environments]
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " → ".join([*path[path.index(name) :], name])
            raise ConfigError(f"environments[{names.index(path[0])}].depends_on: a cycle: {cycle}")
        if name in done:
            return
        for dependency in by_name[name].depends_on:
            visit(dependency, [*path, name])
        done.add(name)

    for name in names:
        visit(name, [])


def parse(raw: Mapping[str, Any], base: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate a configuration mapping (``base`` resolves relative file paths)."""
    env = os.environ if environ is None else environ
    raw = dict(raw)
    unknown(
        raw,
        {
            "repository",
            "clusters",
            "environments",
            "webhooks",
            "leader_election",
            "listen",
            "cache_dir",
            "log_level",
            "kustomize",
            "resync_interval",
            "workers",
            "inventory_namespace",
            "install_crds",
            "promotions",
        },
        "config",
    )
    repo_raw = dict(mapping(raw.get("repository"), "repository"))
    if env.get("RECONCILER_REPOSITORY_URL"):
        repo_raw["url"] = env["RECONCILER_REPOSITORY_URL"]
    if env.get("RECONCILER_REPOSITORY_BRANCH"):
        repo_raw["branch"] = env["RECONCILER_REPOSITORY_BRANCH"]
    if env.get("RECONCILER_POLL_INTERVAL"):
        repo_raw["poll_interval"] = env["RECONCILER_POLL_INTERVAL"]
    unknown(
        repo_raw, {"url", "branch", "poll_interval", "poll_jitter", "credentials", "verify"}, "repository"
    )
    if not repo_raw.get("url"):
        raise ConfigError("repository.url: required (the Git URL of the environments repository)")
    creds_raw = mapping(repo_raw.get("credentials"), "repository.credentials")
    unknown(
        creds_raw, {"token_file", "username", "ssh_key_file", "known_hosts_file"}, "repository.credentials"
    )
    credentials = Credentials(
        token_file=_path(creds_raw, "token_file", "repository.credentials", base),
        username=str(creds_raw.get("username", "x-access-token")),
        ssh_key_file=_path(creds_raw, "ssh_key_file", "repository.credentials", base),
        known_hosts_file=_path(creds_raw, "known_hosts_file", "repository.credentials", base),
    )
    if credentials.ssh_key_file and not credentials.known_hosts_file:
        raise ConfigError(
            "repository.credentials.known_hosts_file: required with ssh_key_file (host keys are verified)"
        )
    repository = RepositoryConfig(
        url=str(expect(repo_raw["url"], str, "repository.url", "a URL")),
        branch=str(expect(repo_raw.get("branch", "main"), str, "repository.branch", "a branch name")),
        poll_interval=number(repo_raw, "poll_interval", "repository", 60.0, minimum=1.0),
        poll_jitter=number(repo_raw, "poll_jitter", "repository", 0.1),
        credentials=credentials,
        verify=_verify(repo_raw.get("verify"), base),
    )

    clusters_raw = expect(raw.get("clusters") or [], list, "clusters", "a list")
    clusters: list[ClusterConfig] = []
    for index, cluster_raw in enumerate(clusters_raw):
        where = f"clusters[{index}]"
        item = mapping(cluster_raw, where)
        unknown(item, {"name", "in_cluster", "kubeconfig", "context"}, where)
        name = str(item.get("name", ""))
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: expected a lower-case DNS label, got {name!r}")
        in_cluster = boolean(item, "in_cluster", where, False)
        kubeconfig = _path(item, "kubeconfig", where, base)
        if not in_cluster and kubeconfig is None:
            raise ConfigError(f"{where}: set in_cluster: true or a kubeconfig")
        clusters.append(ClusterConfig(name, in_cluster, kubeconfig, item.get("context")))
    if not clusters:
        raise ConfigError("clusters: at least one cluster is required")
    names = [c.name for c in clusters]
    if len(set(names)) != len(names):
        raise ConfigError("clusters: names must be unique")

    envs_raw = expect(raw.get("environments") or [], list, "environments", "a list")
    environments: list[EnvironmentConfig] = []
    for index, env_raw in enumerate(envs_raw):
        where = f"environments[{index}]"
        item = mapping(env_raw, where)
        unknown(
            item,
            {
                "name",
                "path",
                "cluster",
                "prune",
                "max_prune_share",
                "prune_protected_kinds",
                "health_timeout",
                "allow_remote_bases",
                "allow_helm",
                "allow_plugins",
                "depends_on",
                "namespaces",
                "cluster_scoped",
                "service_account",
            },
            where,
        )
        name = str(item.get("name", ""))
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: expected a lower-case DNS label, got {name!r}")
        path = str(expect(item.get("path", ""), str, f"{where}.path", "a path inside the repository"))
        if not path or os.path.isabs(path) or ".." in Path(path).parts:
            raise ConfigError(f"{where}.path: expected a relative path inside the repository, got {path!r}")
        cluster = str(item.get("cluster") or clusters[0].name)
        if cluster not in names:
            raise ConfigError(f"{where}.cluster: no cluster named {cluster!r} (known: {', '.join(names)})")
        share = number(item, "max_prune_share", where, 0.5)
        if share > 1:
            raise ConfigError(f"{where}.max_prune_share: a share between 0 and 1, got {share}")
        environments.append(
            EnvironmentConfig(
                name=name,
                path=path,
                cluster=cluster,
                prune=boolean(item, "prune", where, True),
                max_prune_share=share,
                prune_protected_kinds=boolean(item, "prune_protected_kinds", where, False),
                health_timeout=number(item, "health_timeout", where, 300.0, minimum=1.0),
                allow_remote_bases=boolean(item, "allow_remote_bases", where, False),
                allow_helm=boolean(item, "allow_helm", where, False),
                allow_plugins=boolean(item, "allow_plugins", where, False),
                depends_on=tuple(
                    str(d)
                    for d in expect(
                        item.get("depends_on") or [], list, f"{where}.depends_on", "a list of names"
                    )
                ),
                **_tenancy(item, where),
            )
        )
    if not environments:
        raise ConfigError("environments: at least one environment is required")
    env_names = [e.name for e in environments]
    if len(set(env_names)) != len(env_names):
        raise ConfigError("environments: names must be unique")
    _check_dependencies(environments)

    hooks_raw = mapping(raw.get("webhooks"), "webhooks")
    unknown(
        hooks_raw,
        {*PROVIDERS, "insecure_no_secret", "max_body_bytes", "body_timeout", "rate_limit", "rate_window"},
        "webhooks",
    )
    secrets = {provider: _webhook_secret(hooks_raw, provider, base, env) for provider in PROVIDERS}
    webhooks = WebhookConfig(
        secrets={k: v for k, v in secrets.items() if v},
        insecure_no_secret=boolean(hooks_raw, "insecure_no_secret", "webhooks", False),
        max_body_bytes=int(number(hooks_raw, "max_body_bytes", "webhooks", 1024 * 1024, minimum=1024)),
        body_timeout=number(hooks_raw, "body_timeout", "webhooks", 10.0, minimum=0.1),
        rate_limit=int(number(hooks_raw, "rate_limit", "webhooks", 60, minimum=1)),
        rate_window=number(hooks_raw, "rate_window", "webhooks", 60.0, minimum=1.0),
    )
    if not webhooks.secrets and not webhooks.insecure_no_secret:
        raise ConfigError(
            "webhooks: no webhook secret is configured. Set webhooks.<provider>.secret_file (or "
            "RECONCILER_WEBHOOK_<PROVIDER>_SECRET); for local development only, set "
            "webhooks.insecure_no_secret: true"
        )

    leader_raw = mapping(raw.get("leader_election"), "leader_election")
    unknown(
        leader_raw,
        {
            "enabled",
            "cluster",
            "namespace",
            "lease_name",
            "lease_duration",
            "renew_deadline",
            "renew_interval",
            "identity",
        },
        "leader_election",
    )
    enabled = boolean(leader_raw, "enabled", "leader_election", True)
    if env.get("RECONCILER_LEADER_ELECTION"):
        enabled = env["RECONCILER_LEADER_ELECTION"].lower() in ("1", "true", "yes")
    lease_cluster = str(leader_raw.get("cluster") or clusters[0].name)
    if lease_cluster not in names:
        raise ConfigError(f"leader_election.cluster: no cluster named {lease_cluster!r}")
    duration = number(leader_raw, "lease_duration", "leader_election", 8.0, minimum=2.0)
    renew = number(leader_raw, "renew_interval", "leader_election", min(1.0, duration / 4), minimum=0.1)
    if renew >= duration / 2:
        raise ConfigError("leader_election.renew_interval: must be less than half of lease_duration")
    # about client-go's ratio (10 s of 15 s): the leader has stopped well before a follower takes over
    deadline = number(
        leader_raw, "renew_deadline", "leader_election", max(renew * 2, duration * 5 / 8), minimum=0.2
    )
    if not renew < deadline < duration:
        raise ConfigError(
            "leader_election.renew_deadline: must be more than renew_interval and less than lease_duration"
        )
    # stable across restarts of the same pod, so a restarted replica takes its own Lease back at once
    identity = (
        env.get("RECONCILER_IDENTITY")
        or str(leader_raw.get("identity") or "")
        or env.get("POD_NAME")
        or env.get("HOSTNAME")
        or ""
    )
    leader = LeaderElectionConfig(
        enabled=enabled,
        cluster=lease_cluster,
        namespace=str(leader_raw.get("namespace", "reconciler-system")),
        lease_name=str(leader_raw.get("lease_name", "reconciler-leader")),
        lease_duration=duration,
        renew_deadline=deadline,
        renew_interval=renew,
        identity=identity or f"{socket.gethostname()}-{os.getpid()}",
    )

    listen = str(env.get("RECONCILER_LISTEN") or raw.get("listen", "127.0.0.1:8080"))
    if not re.fullmatch(r"[^:]*:\d{1,5}", listen):
        raise ConfigError(f"listen: expected HOST:PORT, got {listen!r}")
    log_level = str(env.get("RECONCILER_LOG_LEVEL") or raw.get("log_level", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: one of debug, info, warning, error; got {log_level!r}")
    cache_dir = Path(str(env.get("RECONCILER_CACHE_DIR") or raw.get("cache_dir") or "/tmp/reconciler"))  # noqa: S108
    kustomize = _path(raw, "kustomize", "config", base)
    promotions = parse_promotions(raw.get("promotions"), base, env_names, env)
    return Settings(
        repository=repository,
        clusters=tuple(clusters),
        environments=tuple(environments),
        webhooks=webhooks,
        leader_election=leader,
        listen=listen,
        cache_dir=cache_dir if cache_dir.is_absolute() else (base / cache_dir),
        log_level=log_level,
        kustomize=kustomize,
        resync_interval=number(raw, "resync_interval", "config", 600.0, minimum=5.0),
        workers=int(number(raw, "workers", "config", 4, minimum=1)),
        inventory_namespace=str(raw.get("inventory_namespace", "reconciler-system")),
        install_crds=boolean(raw, "install_crds", "config", True),
        promotions=promotions,
    )


def load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a configuration file."""
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
    return parse(raw, path.resolve().parent, environ)
