"""The daemon's configuration file as strict pydantic models, and its environment-variable overrides as
a pydantic-settings model: what each field may hold, and what the fields say about each other (clusters
and environments referenced, ``depends_on`` without cycles, the leader election's timings, a webhook
secret). ``reconciler.settings`` validates with them and builds its frozen ``Settings``.

Validation context: ``base`` (the configuration file's directory), ``environ``, ``environments`` (the
names, for the promotion policy), ``webhook_secrets`` (from the overrides) and
``insecure_no_webhook_secret`` (``reconciler run --insecure-no-webhook-secret``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from reconciler.config_fields import (
    ConfigError,
    Duration,
    FieldError,
    Items,
    Section,
    StrictModel,
    describe,
    existing_file,
    secret_problem,
)
from reconciler.promotion.policy import PromotionsModel
from reconciler.promotion.sshsig import AllowedSigner, parse_allowed_signers

PROVIDERS = ("github", "gitlab", "gitea", "bitbucket", "generic")
# the top-level fields named on their own in errors, as before the models (others: ``config.workers``)
SECTIONS = (
    "repository",
    "clusters",
    "environments",
    "webhooks",
    "leader_election",
    "sharding",
    "promotions",
    "listen",
    "log_level",
)

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GLOB = re.compile(r"^[a-z0-9*?\[\]-]{1,63}$")
_KIND = re.compile(r"^(\*|([a-z0-9.-]+/)?[A-Z][A-Za-z0-9]*)$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_LISTEN = re.compile(r"([^:]*):(\d{1,5})")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"expected {what}, got {value!r}")
        return value

    return AfterValidator(check)


def _listen(value: str) -> str:
    match = _LISTEN.fullmatch(value)
    if match is None:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if int(match.group(2)) > 65535:
        raise ValueError(f"the port must be between 0 and 65535, got {match.group(2)}")
    return value


def _log_level(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"one of debug, info, warning, error; got {value!r}")
    return value.lower()


def _repository_path(value: str) -> str:
    if not value or os.path.isabs(value) or ".." in Path(value).parts:
        raise ValueError(f"expected a relative path inside the repository, got {value!r}")
    return value


_URL = "the Git URL of the environments repository"


def _required_url(value: str) -> str:
    if not value:
        raise ValueError(f"required ({_URL})")
    return value


def _share(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"a share between 0 and 1, got {value}")
    return value


_DNS = "a lower-case DNS label"
DnsName = Annotated[str, _matching(_NAME, _DNS), Field(description=_DNS)]
_NS = "a namespace name (a lower-case DNS label)"
Namespace = Annotated[str, _matching(_NAMESPACE, _NS), Field(description=_NS)]
_LEASE = "a Lease name (a lower-case DNS subdomain)"
_FILE = "a file path"
ExistingFile = Annotated[str | None, AfterValidator(existing_file), Field(description=_FILE)]
_GLOB_WORDS = "a namespace name or glob (team-a, team-a-*)"
_KIND_WORDS = "a kind (ClusterRole), group/Kind (rbac.authorization.k8s.io/ClusterRole) or *"
_ACCOUNT_WORDS = "NAMESPACE/NAME of a ServiceAccount"


class CredentialsModel(StrictModel):
    """``repository.credentials``: files only, never the secrets themselves."""

    token_file: ExistingFile = None
    username: str = "x-access-token"
    ssh_key_file: ExistingFile = None
    known_hosts_file: ExistingFile = None

    @model_validator(mode="after")
    def _host_keys(self) -> CredentialsModel:
        if self.ssh_key_file and not self.known_hosts_file:
            raise FieldError(("known_hosts_file", "required with ssh_key_file (host keys are verified)"))
        return self


class VerifyModel(StrictModel):
    """``repository.verify``: an OpenSSH allowed_signers file and/or a file of allowed OpenPGP keys."""

    allowed_signers: ExistingFile = None
    gpg_public_keys: ExistingFile = None
    _signers: tuple[AllowedSigner, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _signers_read(self) -> VerifyModel:
        if self.allowed_signers is None and self.gpg_public_keys is None:
            raise FieldError(("", "set allowed_signers (SSH) and/or gpg_public_keys (OpenPGP)"))
        if self.allowed_signers is not None:
            try:
                text = Path(self.allowed_signers).read_text(encoding="utf-8")
                self._signers = tuple(parse_allowed_signers(text, self.allowed_signers))
            except (OSError, ValueError) as exc:
                raise FieldError(("allowed_signers", str(exc))) from None
            if not self._signers:
                raise FieldError(("allowed_signers", f"{self.allowed_signers} lists no signer"))
        return self

    @property
    def signers(self) -> tuple[AllowedSigner, ...]:
        """The allowed SSH signers of commits."""
        return self._signers


class RepositoryModel(StrictModel):
    """``repository``: the environments repository."""

    url: Annotated[str, AfterValidator(_required_url)] = Field(description=_URL)
    branch: str = Field(default="main", description="a branch name")
    poll_interval: Duration = Field(default=60.0, ge=1.0)
    poll_jitter: Duration = 0.1
    credentials: Annotated[CredentialsModel, Section] = Field(default_factory=CredentialsModel)
    verify: VerifyModel | None = None  # only commits signed by these signers are synced


class SecretKeyModel(StrictModel):
    """``clusters[N].kubeconfig_secret``: one key of a Secret on the daemon's home cluster."""

    namespace: DnsName
    name: DnsName
    key: str = Field(default="kubeconfig", min_length=1, description="a key of the Secret's data")


class ClusterModel(StrictModel):
    """``clusters[N]``: in-cluster, a kubeconfig file (and context), or a kubeconfig held in a Secret of
    the home cluster; how often it is probed, how long a request may take, how many syncs run at once."""

    name: DnsName
    in_cluster: bool = False
    kubeconfig: ExistingFile = None
    kubeconfig_secret: SecretKeyModel | None = None
    context: str | None = None
    probe_interval: Duration = Field(default=5.0, ge=0.2)
    request_timeout: Duration = Field(default=30.0, ge=1.0)
    max_concurrent_syncs: int | None = Field(
        default=None, ge=1, description="a whole number (default: workers)"
    )

    @model_validator(mode="after")
    def _reachable(self) -> ClusterModel:
        ways = [self.in_cluster, self.kubeconfig is not None, self.kubeconfig_secret is not None]
        if sum(ways) != 1:
            raise FieldError(("", "set exactly one of in_cluster: true, kubeconfig or kubeconfig_secret"))
        return self


class EnvironmentModel(StrictModel):
    """``environments[N]``: a kustomize directory synced to a cluster, and what it may change."""

    name: DnsName
    path: Annotated[str, AfterValidator(_repository_path)] = Field(description="a path inside the repository")
    cluster: str | None = Field(default=None, description="a cluster name")
    prune: bool = True
    max_prune_share: Annotated[float, AfterValidator(_share)] = 0.5
    prune_protected_kinds: bool = False
    health_timeout: Duration = Field(default=300.0, ge=1.0)
    allow_remote_bases: bool = False
    allow_helm: bool = False
    allow_plugins: bool = False
    depends_on: Items[str] = Field(default_factory=list, description="a list of environment names")
    namespaces: list[Annotated[str, _matching(_GLOB, _GLOB_WORDS), Field(description=_GLOB_WORDS)]] | None = (
        Field(default=None, description="a list of namespace globs")
    )
    cluster_scoped: Items[Annotated[str, _matching(_KIND, _KIND_WORDS), Field(description=_KIND_WORDS)]] = (
        Field(default_factory=list, description="a list of kinds")
    )
    service_account: Annotated[str, _matching(_SERVICE_ACCOUNT, _ACCOUNT_WORDS)] | None = Field(
        default=None, description=_ACCOUNT_WORDS
    )


class ProviderModel(StrictModel):
    """``webhooks.<provider>``: where its secret is."""

    secret_file: ExistingFile = None


class WebhooksModel(StrictModel):
    """``webhooks``: a secret per provider (a file, or ``RECONCILER_WEBHOOK_<PROVIDER>_SECRET``), limits."""

    github: Annotated[ProviderModel, Section] = Field(default_factory=ProviderModel)
    gitlab: Annotated[ProviderModel, Section] = Field(default_factory=ProviderModel)
    gitea: Annotated[ProviderModel, Section] = Field(default_factory=ProviderModel)
    bitbucket: Annotated[ProviderModel, Section] = Field(default_factory=ProviderModel)
    generic: Annotated[ProviderModel, Section] = Field(default_factory=ProviderModel)
    insecure_no_secret: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout: Duration = Field(default=10.0, ge=0.1)
    rate_limit: int = Field(default=60, ge=1)
    rate_window: Duration = Field(default=60.0, ge=1.0)
    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def secrets(self) -> Mapping[str, str]:
        """The secret of each provider that has one (read by the validation)."""
        return self._secrets

    @model_validator(mode="after")
    def _secrets_read(self, info: ValidationInfo) -> WebhooksModel:
        context = info.context or {}
        from_environ: Mapping[str, str] = context.get("webhook_secrets", {})
        problems: list[tuple[str, str]] = []
        for provider in PROVIDERS:
            variable = f"RECONCILER_WEBHOOK_{provider.upper()}_SECRET"
            path = getattr(self, provider).secret_file
            where = f"{provider} ({variable})" if from_environ.get(provider) else f"{provider}.secret_file"
            try:
                value = from_environ.get(provider) or (
                    Path(path).read_text(encoding="utf-8").strip() if path else ""
                )
            except OSError as exc:
                problems.append((where, f"cannot read {path}: {exc.strerror}"))
                continue
            problem = secret_problem(value) if value else ""
            if problem:
                problems.append((where, problem))
            elif value:
                self._secrets[provider] = value
        if problems:
            raise FieldError(*problems)
        if (
            not self._secrets
            and not self.insecure_no_secret
            and not context.get("insecure_no_webhook_secret")
        ):
            raise FieldError(
                (
                    "",
                    "no webhook secret is configured. Set webhooks.<provider>.secret_file (or "
                    "RECONCILER_WEBHOOK_<PROVIDER>_SECRET); for local development only, set "
                    "webhooks.insecure_no_secret: true (or run with --insecure-no-webhook-secret)",
                )
            )
        return self


class LeaderElectionModel(StrictModel):
    """``leader_election``: client-go's lease, renew deadline and retry period (the last two derived
    from the lease when not set)."""

    enabled: bool = True
    cluster: str | None = Field(default=None, description="a cluster name")
    namespace: Namespace = "reconciler-system"
    lease_name: Annotated[str, _matching(_SUBDOMAIN, _LEASE), Field(description=_LEASE)] = "reconciler-leader"
    lease_duration: Duration = Field(default=8.0, ge=2.0)
    renew_deadline: Duration | None = Field(default=None, ge=0.2)
    renew_interval: Duration | None = Field(default=None, ge=0.1)
    identity: str | None = Field(default=None, description="a replica's identity (the pod name)")
    _timings: tuple[float, float] = PrivateAttr((1.0, 5.0))

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionModel:
        duration = self.lease_duration
        renew = min(1.0, duration / 4) if self.renew_interval is None else self.renew_interval
        if renew >= duration / 2:
            raise FieldError(("renew_interval", "must be less than half of lease_duration"))
        # about client-go's ratio (10 s of 15 s): the leader has stopped well before a follower takes over
        deadline = max(renew * 2, duration * 5 / 8) if self.renew_deadline is None else self.renew_deadline
        if not renew < deadline < duration:
            raise FieldError(
                ("renew_deadline", "must be more than renew_interval and less than lease_duration")
            )
        self._timings = (renew, deadline)
        return self

    @property
    def timings(self) -> tuple[float, float]:
        """``(renew_interval, renew_deadline)`` as given or derived."""
        return self._timings


class ShardingModel(StrictModel):
    """``sharding``: every replica works, environments spread over the live replicas (member Leases)
    and each written only under its claim (a per-environment Lease); replaces leader election."""

    enabled: bool = False
    group: DnsName = "default"
    lease_duration: Duration = Field(default=10.0, ge=2.0)
    renew_interval: Duration = Field(default=2.0, ge=0.1)
    safety_margin: Duration = Field(default=2.0, ge=0.1)

    @model_validator(mode="after")
    def _ordered(self) -> ShardingModel:
        if not self.safety_margin < self.lease_duration / 2:
            raise FieldError(("safety_margin", "must be less than half of lease_duration"))
        if not self.renew_interval < (self.lease_duration - self.safety_margin) / 2:
            raise FieldError(("renew_interval", "must be less than half of lease_duration - safety_margin"))
        return self


class SettingsModel(StrictModel):
    """The whole configuration file."""

    repository: Annotated[RepositoryModel, Section]
    clusters: Items[ClusterModel] = Field(default_factory=list)
    environments: Items[EnvironmentModel] = Field(default_factory=list)
    webhooks: Annotated[WebhooksModel, Section]
    leader_election: Annotated[LeaderElectionModel, Section] = Field(default_factory=LeaderElectionModel)
    sharding: Annotated[ShardingModel, Section] = Field(default_factory=ShardingModel)
    listen: Annotated[str, AfterValidator(_listen)] = Field(default="127.0.0.1:8080", description="HOST:PORT")
    cache_dir: str = Field(default="/tmp/reconciler", description="a directory path")  # noqa: S108
    log_level: Annotated[str, AfterValidator(_log_level)] = Field(
        default="info", description="one of debug, info, warning, error"
    )
    kustomize: ExistingFile = None
    resync_interval: Duration = Field(default=600.0, ge=5.0)
    workers: int = Field(default=4, ge=1)
    inventory_namespace: Namespace = "reconciler-system"
    install_crds: bool = True
    promotions: Annotated[PromotionsModel, Section] = Field(default_factory=PromotionsModel)

    @model_validator(mode="after")
    def _references(self) -> SettingsModel:
        problems = [*_cluster_problems(self), *_environment_problems(self)]
        if problems:
            raise FieldError(*problems)
        problems = _dependency_problems(self)
        if problems:
            raise FieldError(*problems)
        return self

    def cluster_of(self, environment: EnvironmentModel) -> str:
        """The environment's cluster (the first one when not named)."""
        return environment.cluster or self.clusters[0].name


def _cluster_problems(model: SettingsModel) -> list[tuple[str, str]]:
    names = [c.name for c in model.clusters]
    if not names:
        return [("clusters", "at least one cluster is required")]
    problems = [] if len(set(names)) == len(names) else [("clusters", "names must be unique")]
    if model.leader_election.cluster and model.leader_election.cluster not in names:
        problems.append(("leader_election.cluster", f"no cluster named {model.leader_election.cluster!r}"))
        return problems
    home = model.leader_election.cluster or names[0]
    for index, cluster in enumerate(model.clusters):
        if cluster.name == home and cluster.kubeconfig_secret is not None:
            problems.append(
                (
                    f"clusters[{index}].kubeconfig_secret",
                    f"{home!r} is the home cluster (leader_election.cluster, else the first cluster), where "
                    "kubeconfig Secrets are read from: give it in_cluster: true or a kubeconfig file",
                )
            )
    return problems


def _environment_problems(model: SettingsModel) -> list[tuple[str, str]]:
    if not model.environments:
        return [("environments", "at least one environment is required")]
    clusters = [c.name for c in model.clusters]
    problems = [
        (
            f"environments[{index}].cluster",
            f"no cluster named {env.cluster!r} (known: {', '.join(clusters)})",
        )
        for index, env in enumerate(model.environments)
        if clusters and env.cluster is not None and env.cluster not in clusters
    ]
    names = [e.name for e in model.environments]
    if len(set(names)) != len(names):
        problems.append(("environments", "names must be unique"))
    return problems


def _dependency_problems(model: SettingsModel) -> list[tuple[str, str]]:
    """``depends_on`` names other configured environments of the same cluster, without cycles."""
    by_name = {e.name: e for e in model.environments}
    problems: list[tuple[str, str]] = []
    for index, env in enumerate(model.environments):
        where = f"environments[{index}].depends_on"
        for dependency in env.depends_on:
            other = by_name.get(dependency)
            if other is None or dependency == env.name:
                problems.append((where, f"{dependency!r} is not another configured environment"))
            elif model.cluster_of(other) != model.cluster_of(env):
                problems.append(
                    (where, f"{dependency!r} syncs to another cluster ({model.cluster_of(other)!r})")
                )
    return problems or _cycle(model)


def _cycle(model: SettingsModel) -> list[tuple[str, str]]:
    """The first ``depends_on`` cycle, depth-first, each environment explored once (linear in edges)."""
    by_name = {e.name: e for e in model.environments}
    names = list(by_name)
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[tuple[str, str]]:
        if name in path:
            cycle = " → ".join([*path[path.index(name) :], name])
            return [(f"environments[{names.index(path[0])}].depends_on", f"a cycle: {cycle}")]
        if name in done:
            return []
        for dependency in by_name[name].depends_on:
            found = visit(dependency, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for name in names:
        found = visit(name, [])
        if found:
            return found
    return []


# -- environment-variable overrides -----------------------------------------------------------------
class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k if self.case_sensitive else k.lower(): v for k, v in self._environ.items() if v}


class Overrides(BaseSettings):
    """``RECONCILER_*`` variables that win over the file (empty ones are ignored), and the pod's name."""

    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="ignore", env_ignore_empty=True)

    listen: str | None = None
    log_level: str | None = None
    cache_dir: str | None = None
    repository_url: str | None = None
    repository_branch: str | None = None
    poll_interval: str | None = None
    leader_election: bool | None = None
    identity: str | None = None
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")
    hostname: str | None = Field(default=None, validation_alias="HOSTNAME")
    webhook_github_secret: SecretStr | None = None
    webhook_gitlab_secret: SecretStr | None = None
    webhook_gitea_secret: SecretStr | None = None
    webhook_bitbucket_secret: SecretStr | None = None
    webhook_generic_secret: SecretStr | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Overrides:
        """The overrides in ``environ``; an invalid one is a ``ConfigError`` naming the variable."""
        try:
            return cls.model_validate(_MappingSource(cls, environ)())
        except ValidationError as exc:
            lines = [line.split(": ", 1) for line in describe(exc.errors(include_url=False), cls, "")]
            raise ConfigError("\n".join(f"{_variable(name)}: {message}" for name, message in lines)) from None

    def webhook_secrets(self) -> dict[str, str]:
        """The webhook secrets set in the environment, by provider."""
        found = {p: getattr(self, f"webhook_{p}_secret") for p in PROVIDERS}
        return {p: s.get_secret_value() for p, s in found.items() if s is not None}

    def apply(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """``raw`` with the overrides written into it (sections that are not mappings stay as they are,
        for the validation to name them)."""
        data = dict(raw)
        repository = _section(data, "repository")
        for key, value in (
            ("url", self.repository_url),
            ("branch", self.repository_branch),
            ("poll_interval", self.poll_interval),
        ):
            if value is not None and repository is not None:
                repository[key] = value
        leader = _section(data, "leader_election")
        if self.leader_election is not None and leader is not None:
            leader["enabled"] = self.leader_election
        for key in ("listen", "log_level", "cache_dir"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        data.setdefault("webhooks", {})
        return data


def _variable(field: str) -> str:
    return field if field.isupper() else f"RECONCILER_{field.upper()}"


def _section(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``data[key]`` as a copied mapping written back ({} when missing), None when it is not one."""
    value = data.get(key)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return None
    copied = dict(value)
    data[key] = copied
    return copied
