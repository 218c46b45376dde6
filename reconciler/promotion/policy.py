"""Promotion policy from the daemon's configuration: pipelines, approvers, integrations, windows.

Policy lives in the daemon's configuration, never in the environments repository, so a committer cannot
grant themselves approvals. Everything here is pure: parsing with errors that name the field, whether a
window is open at an instant, and which approvals count. The section is validated as pydantic models
(``PromotionsModel`` and its parts: strict types, no unknown field, references checked by their
validators) and then built into the frozen dataclasses the controller reads (``PromotionSettings``).

Configuration shape (under ``promotions:``)::

    approvers:                      # people; each signs with their own SSH key (the daemon holds
      - identity: alice@example.com #   only public keys: nobody who reads it can sign as alice)
        keys:                       # several while a key is rotated; remove one to revoke it
          - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop
        groups: [sre]
    allowed_signers_file: /etc/reconciler/approvers/allowed_signers   # and/or OpenSSH's format:
                                    # "alice@example.com namespaces="reconciler-promotion" ssh-ed25519 ..."
    integrations:                   # a system (chat bot, CI) that signs on behalf of the identities
      - name: chatops               # listed, with an HMAC secret (integrations only, never people)
        secret_file: /etc/reconciler/integrations/chatops
        identities: [alice@example.com, "group:sre"]
    pipelines:
      - name: tams
        from: tams-staging
        to: tams-production
        images: true                # promote the images: entries of the source kustomization (default)
        files: []                   # and/or named files of the source overlay, copied verbatim
        approvals: 2
        approvers: [alice@example.com, "group:sre"]
        allow_self_approval: false  # authors of promoted commits and the requester cannot approve
        soak: 10m                   # source Synced and Healthy at the candidate for at least this long
        windows:                    # allow windows (at least one must be open) and deny windows
          - {allow: true, days: [mon, tue, wed, thu], start: "09:00", end: "16:00", timezone: Europe/Berlin}
        expire_after: 24h
        auto_request: false         # request automatically when the source is healthy at a new revision
        timeout: 15m                # from commit to target Synced and Healthy
        rollback: {approvals: 1, soak: 0}
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconciler.config_fields import (
    ConfigError,
    FieldError,
    Items,
    PolicyDuration,
    Section,
    StrictModel,
    base_of,
    empty_if_none,
    environ_of,
    resolve,
    secret_problem,
    validate,
)
from reconciler.promotion import sshsig
from reconciler.promotion.sshsig import NAMESPACE, AllowedSigner, SSHSigError, parse_allowed_signers

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(:[0-5]\d)?$|^24:00$")
MIN_SECRET = 16


# The promotion configuration is validated like the rest of the daemon's configuration.
PolicyError = ConfigError


@dataclass(frozen=True)
class Approver:
    """A person who signs with their own SSH keys (the daemon holds only the public halves)."""

    identity: str
    keys: tuple[AllowedSigner, ...] = ()
    groups: frozenset[str] = frozenset()

    def keys_valid(self, when: dt.datetime) -> list[str]:
        """The public keys that may sign promotion calls for this approver at ``when``."""
        return [k.key for k in self.keys if k.allows(self.identity, NAMESPACE, when)]


@dataclass(frozen=True)
class Integration:
    """A system that signs on behalf of the identities (or ``group:NAME`` members) it lists."""

    name: str
    secret: str = field(repr=False)
    identities: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Window:
    """A weekly time window in a time zone; ``allow`` windows open promotions, deny windows close them."""

    allow: bool
    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time  # exclusive; 00:00 means the end of the day
    timezone: str

    def contains(self, instant: dt.datetime) -> bool:
        """True when ``instant`` (aware) falls inside the window, in the window's time zone."""
        local = instant.astimezone(ZoneInfo(self.timezone))
        if local.weekday() not in self.days:
            return False
        moment = local.time().replace(tzinfo=None)
        end_of_day = self.end == dt.time(0, 0)
        return self.start <= moment and (end_of_day or moment < self.end)


@dataclass(frozen=True)
class RollbackPolicy:
    """The (usually faster) gates of a rollback."""

    approvals: int = 1
    soak: float = 0.0


@dataclass(frozen=True)
class Pipeline:
    """One promotion path, such as staging → production."""

    name: str
    source: str
    target: str
    images: bool = True
    files: tuple[str, ...] = ()
    approvals: int = 1
    approvers: frozenset[str] = frozenset()  # identities and group:NAME entries
    allow_self_approval: bool = False
    soak: float = 0.0
    windows: tuple[Window, ...] = ()
    expire_after: float = 24 * 3600.0
    auto_request: bool = False
    timeout: float = 900.0
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)


@dataclass(frozen=True)
class PromotionSettings:
    """Everything promotions need from the configuration."""

    pipelines: tuple[Pipeline, ...] = ()
    approvers: tuple[Approver, ...] = ()
    integrations: tuple[Integration, ...] = ()
    timestamp_window: float = 300.0
    author_name: str = "reconciler"
    author_email: str = "reconciler@localhost"
    # the daemon's own SSH key: its promotion commits are signed with it (list its public key in
    # repository.verify.allowed_signers, so the daemon's own commits verify)
    signing_key: Path | None = None

    def pipeline(self, source: str, target: str) -> Pipeline | None:
        """The pipeline from ``source`` to ``target``, if configured."""
        return next((p for p in self.pipelines if p.source == source and p.target == target), None)

    def pipeline_named(self, name: str) -> Pipeline | None:
        """The pipeline called ``name``."""
        return next((p for p in self.pipelines if p.name == name), None)

    def pipeline_to(self, target: str) -> Pipeline | None:
        """The pipeline that promotes into ``target`` (for rollbacks)."""
        return next((p for p in self.pipelines if p.target == target), None)

    def approver(self, identity: str) -> Approver | None:
        """The approver with this identity."""
        return next((a for a in self.approvers if a.identity == identity), None)

    def groups_of(self, identity: str) -> frozenset[str]:
        """The groups an identity belongs to."""
        approver = self.approver(identity)
        return approver.groups if approver else frozenset()

    def may_approve(self, pipeline: Pipeline, identity: str) -> bool:
        """True when ``identity`` is on the pipeline's allow-list, directly or through a group."""
        if identity in pipeline.approvers:
            return True
        return any(f"group:{g}" in pipeline.approvers for g in self.groups_of(identity))

    def integration_may_assert(self, integration: Integration, identity: str) -> bool:
        """True when an integration may sign on behalf of ``identity``."""
        if identity in integration.identities:
            return True
        return any(f"group:{g}" in integration.identities for g in self.groups_of(identity))


def window_verdict(windows: Sequence[Window], instant: dt.datetime) -> tuple[bool, str]:
    """Whether promotions may land at ``instant``, and why not."""
    for window in windows:
        if not window.allow and window.contains(instant):
            return False, f"inside a deny window ({_describe(window)})"
    allows = [w for w in windows if w.allow]
    if allows and not any(w.contains(instant) for w in allows):
        return False, "outside every allow window (" + "; ".join(_describe(w) for w in allows) + ")"
    return True, ""


def _describe(window: Window) -> str:
    days = ",".join(_DAYS[d] for d in sorted(window.days))
    return f"{days} {window.start.isoformat()}-{window.end.isoformat()} {window.timezone}"


def counted_approvals(
    approvals: Iterable[Mapping[str, Any]], revision: str, excluded: Iterable[str] = ()
) -> list[str]:
    """The distinct identities whose approvals count: bound to ``revision``, not excluded (self-approval)."""
    blocked = {e.lower() for e in excluded}
    seen: list[str] = []
    for approval in approvals:
        identity = str(approval.get("identity", ""))
        if approval.get("revision") != revision or identity.lower() in blocked or identity in seen:
            continue
        seen.append(identity)
    return seen


# -- the policy as models: types and formats on the fields, references between them in validators ---
_KEY_LINE = "an SSH public key line (ssh-ed25519 AAAA... comment)"
_CLOCK = "a time HH:MM in quotes (YAML reads 16:00 unquoted as a number of minutes)"


def _lower_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"expected a lower-case name, got {value!r}")
    return value


def _clock_text(value: str) -> str:
    if not _TIME.fullmatch(value):
        raise ValueError(f"expected HH:MM (or HH:MM:SS), got {value!r}")
    return value


def _day(value: str) -> str:
    if value.lower()[:3] not in _DAYS:
        raise ValueError(f"unknown day {value!r} (use mon..sun)")
    return value.lower()[:3]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


LowerName = Annotated[str, AfterValidator(_lower_name), Field(description="a lower-case name")]
Clock = Annotated[str, AfterValidator(_clock_text), Field(description=_CLOCK)]


class WindowModel(StrictModel):
    """``{allow: true, days: [mon], start: "09:00", end: "16:00", timezone: Europe/Berlin}``."""

    allow: bool = True
    deny: bool = True
    days: Items[Annotated[str, AfterValidator(_day), Field(description="a day (mon..sun)")]] = Field(
        default_factory=lambda: list(_DAYS)
    )
    start: Clock = "00:00"
    end: Clock = "24:00"
    timezone: Annotated[str, AfterValidator(_time_zone)] = "UTC"

    @model_validator(mode="after")
    def _one_kind_and_in_order(self) -> WindowModel:
        if ("allow" in self.model_fields_set) == ("deny" in self.model_fields_set):
            raise FieldError(("", "set exactly one of allow: true or deny: true"))
        start, end = _clock(self.start), _clock(self.end)
        if end != dt.time(0, 0) and end <= start:
            raise FieldError(("", "end must be after start (split overnight windows in two)"))
        return self


class ApproverModel(StrictModel):
    """A person: an identity, their SSH public keys, their groups."""

    identity: str = Field(description="an identity, for example an e-mail address")
    keys: Items[Annotated[str, Field(description=_KEY_LINE)]] = Field(
        default_factory=list, description="a list of SSH public key lines"
    )
    groups: Items[str] = Field(default_factory=list)
    secret_file: Any = Field(default=None, exclude=True)  # refused, with the reason
    _keys: list[AllowedSigner] = PrivateAttr(default_factory=list)

    @field_validator("identity")
    @classmethod
    def _an_identity(cls, value: str) -> str:
        if not value or value.startswith("group:") or len(value) > 200:
            raise ValueError("required (for example an e-mail address)")
        return value

    @field_validator("secret_file")
    @classmethod
    def _no_shared_secret(cls, value: Any) -> Any:
        raise ValueError(
            "approvers sign with their own SSH keys (keys: or promotions.allowed_signers_file), so that "
            "nobody who can read the daemon's secrets can sign as them; HMAC secrets are for "
            "integrations only"
        )

    @model_validator(mode="after")
    def _usable_keys(self) -> ApproverModel:
        problems: list[tuple[str, str]] = []
        for index, line in enumerate(self.keys):
            try:
                self._keys.append(parse_allowed_signers(f'"{self.identity}" {line}', f"keys[{index}]")[0])
            except (ValueError, IndexError) as exc:
                problems.append((f"keys[{index}]", f"not a usable SSH public key ({exc})"))
        if problems:
            raise FieldError(*problems)
        return self


class IntegrationModel(StrictModel):
    """A system signing with an HMAC secret on behalf of the identities it lists."""

    name: LowerName
    secret_file: str | None = Field(default=None, description="a file path")
    identities: Items[str] = Field(default_factory=list)
    _secret: str = PrivateAttr("")

    @model_validator(mode="after")
    def _read_secret(self, info: ValidationInfo) -> IntegrationModel:
        variable = f"RECONCILER_INTEGRATION_{_env_key(self.name)}_SECRET"
        value = environ_of(info).get(variable, "")
        if not value:
            if not self.secret_file:
                raise FieldError(("secret_file", f"required (or set {variable})"))
            path = resolve(self.secret_file, base_of(info))
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise FieldError(("secret_file", f"cannot read {path}: {exc.strerror}")) from None
        problem = secret_problem(value, MIN_SECRET)
        if problem:
            raise FieldError(("", problem))
        self._secret = value
        return self


class RollbackModel(StrictModel):
    """The gates of a rollback (approvals default to the pipeline's)."""

    approvals: int | None = Field(default=None, ge=1)
    soak: PolicyDuration = 0.0


class PipelineModel(StrictModel):
    """One promotion path (``from``/``to`` are environment names)."""

    name: LowerName
    source: str = Field(alias="from", description="an environment name")
    target: str = Field(alias="to", description="an environment name")
    images: bool = True
    files: Items[str] = Field(default_factory=list)
    approvals: int = Field(default=1, ge=1)
    approvers: Items[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    soak: PolicyDuration = 0.0
    windows: Items[WindowModel] = Field(default_factory=list)
    expire_after: PolicyDuration = 24 * 3600.0
    auto_request: bool = False
    timeout: PolicyDuration = 900.0
    rollback: Annotated[RollbackModel, Section] = Field(default_factory=RollbackModel)

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> PipelineModel:
        known = set((info.context or {}).get("environments", ()))
        for key, value in (("from", self.source), ("to", self.target)):
            if value not in known:
                raise FieldError((key, f"no environment named {value!r}"))
        if self.source == self.target:
            raise FieldError(("", "from and to must differ"))
        for file in self.files:
            if Path(file).is_absolute() or ".." in Path(file).parts or "/" in file:
                raise FieldError(("files", f"{file!r} must be a file name inside the overlay"))
        if not self.images and not self.files:
            raise FieldError(("", "promotes nothing (images: false and no files)"))
        if not self.approvers:
            raise FieldError(("approvers", "list the identities (or group:NAME) allowed to approve"))
        return self


class AuthorModel(StrictModel):
    """The author of promotion commits."""

    name: str = "reconciler"
    email: str = "reconciler@localhost"


class PromotionsModel(StrictModel):
    """The ``promotions:`` section; the validators check what its parts say about each other."""

    approvers: Items[ApproverModel] = Field(default_factory=list)
    allowed_signers_file: str | None = Field(default=None, description="a file path")
    integrations: Items[IntegrationModel] = Field(default_factory=list)
    pipelines: Items[PipelineModel] = Field(default_factory=list)
    timestamp_window: PolicyDuration = 300.0
    author: Annotated[AuthorModel, Section] = Field(default_factory=AuthorModel)
    signing_key: str | None = Field(default=None, description="the path of an SSH private key file")
    _shared: list[AllowedSigner] = PrivateAttr(default_factory=list)

    @field_validator("signing_key")
    @classmethod
    def _can_sign(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("expected the path of an SSH private key file")
        path = resolve(value, base_of(info))
        try:
            sshsig.sign_with_key(path, b"reconciler: can this key sign?", namespace="git")
        except (OSError, SSHSigError) as exc:
            raise ValueError(f"{path} cannot sign ({exc})") from None
        return str(path)

    @field_validator("allowed_signers_file")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("expected a file path")
        return value

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> PromotionsModel:
        self._shared = _allowed_signers(self.allowed_signers_file, base_of(info))
        problems = [*_approver_problems(self), *_integration_problems(self), *_pipeline_problems(self)]
        if problems:
            raise FieldError(*problems)
        return self


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _clock(value: str) -> dt.time:
    if value == "24:00":
        return dt.time(0, 0)
    parts = [int(part) for part in value.split(":")] + [0]
    return dt.time(parts[0], parts[1], parts[2])


def _allowed_signers(value: str | None, base: Path) -> list[AllowedSigner]:
    """The approvers' keys from an OpenSSH allowed_signers file (principals are approver identities)."""
    if value is None:
        return []
    path = resolve(value, base)
    try:
        return parse_allowed_signers(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise FieldError(("allowed_signers_file", f"cannot read {path}: {exc.strerror}")) from None
    except (ValueError, SSHSigError) as exc:
        raise FieldError(("allowed_signers_file", str(exc))) from None


def _approver_problems(model: PromotionsModel) -> list[tuple[str, str]]:
    """Every approver has a key; identities are unique; every allowed signer is an approver."""
    problems: list[tuple[str, str]] = []
    for index, approver in enumerate(model.approvers):
        if not approver._keys and not any(approver.identity in s.principals for s in model._shared):
            problems.append(
                (
                    f"approvers[{index}].keys",
                    f"{approver.identity} has no SSH public key (list it here or in "
                    "promotions.allowed_signers_file)",
                )
            )
    listed = [a.identity for a in model.approvers]
    if len(set(listed)) != len(listed):
        problems.append(("approvers", "identities must be unique"))
    for signer in model._shared:
        strays = [p for p in signer.principals if p not in listed]
        if strays:
            problems.append(
                (
                    "allowed_signers_file",
                    f"{', '.join(strays)} is not an approver (add it to promotions.approvers with its "
                    "groups)",
                )
            )
    return problems


def _integration_problems(model: PromotionsModel) -> list[tuple[str, str]]:
    """An integration is not named like an approver."""
    identities = {a.identity for a in model.approvers}
    return [
        (f"integrations[{index}].name", f"{integration.name!r} is also an approver identity")
        for index, integration in enumerate(model.integrations)
        if integration.name in identities
    ]


def _pipeline_problems(model: PromotionsModel) -> list[tuple[str, str]]:
    """Pipelines name approvers that exist; their names and targets are unique."""
    identities = {a.identity for a in model.approvers}
    problems = [
        (f"pipelines[{index}].approvers", f"{entry!r} is not in promotions.approvers")
        for index, pipeline in enumerate(model.pipelines)
        for entry in dict.fromkeys(pipeline.approvers)
        if not entry.startswith("group:") and entry not in identities
    ]
    names = [p.name for p in model.pipelines]
    if len(set(names)) != len(names):
        problems.append(("pipelines", "names must be unique"))
    targets = [p.target for p in model.pipelines]
    if len(set(targets)) != len(targets):
        problems.append(("pipelines", "one pipeline per target environment"))
    return problems


# -- from the validated models to the policy the controller reads -----------------------------------
def _window(model: WindowModel) -> Window:
    allow = model.allow if "allow" in model.model_fields_set else not model.deny
    days = frozenset(_DAYS.index(day) for day in model.days)
    return Window(allow, days, _clock(model.start), _clock(model.end), model.timezone)


def _pipeline(model: PipelineModel) -> Pipeline:
    return Pipeline(
        name=model.name,
        source=model.source,
        target=model.target,
        images=model.images,
        files=tuple(model.files),
        approvals=model.approvals,
        approvers=frozenset(model.approvers),
        allow_self_approval=model.allow_self_approval,
        soak=model.soak,
        windows=tuple(_window(w) for w in model.windows),
        expire_after=model.expire_after,
        auto_request=model.auto_request,
        timeout=model.timeout,
        rollback=RollbackPolicy(
            approvals=model.rollback.approvals or model.approvals, soak=model.rollback.soak
        ),
    )


def build(model: PromotionsModel) -> PromotionSettings:
    """The policy from its validated model."""
    approvers = tuple(
        Approver(
            a.identity,
            (*a._keys, *(s for s in model._shared if a.identity in s.principals)),
            frozenset(a.groups),
        )
        for a in model.approvers
    )
    return PromotionSettings(
        signing_key=Path(model.signing_key) if model.signing_key else None,
        pipelines=tuple(_pipeline(p) for p in model.pipelines),
        approvers=approvers,
        integrations=tuple(
            Integration(i.name, i._secret, frozenset(i.identities)) for i in model.integrations
        ),
        timestamp_window=model.timestamp_window,
        author_name=model.author.name,
        author_email=model.author.email,
    )


def context(base: Path, environments: Iterable[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """The validation context of ``PromotionsModel``."""
    return {"base": base, "environ": environ, "environments": list(environments)}


def parse(
    raw: Any, base: Path, environments: Iterable[str], environ: Mapping[str, str] | None = None
) -> PromotionSettings:
    """Validate the ``promotions:`` section; ``environments`` are the configured environment names.

    Secrets come from ``secret_file`` or from ``RECONCILER_INTEGRATION_<NAME>_SECRET``
    (non-alphanumerics become ``_``). Every problem is a line of the ``PolicyError``, naming its field.
    """
    env = os.environ if environ is None else environ
    model = validate(PromotionsModel, empty_if_none(raw), "promotions", context(base, environments, env))
    return build(model)
