"""Promotion policy from the daemon's configuration: pipelines, approvers, integrations, windows.

Policy lives in the daemon's configuration, never in the environments repository, so a committer cannot
grant themselves approvals. Everything here is pure: parsing with errors that name the field, whether a
window is open at an instant, and which approvals count.

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
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.config_fields import ConfigError, boolean, expect, mapping, number, unknown
from reconciler.config_fields import secret as check_secret
from reconciler.promotion import sshsig
from reconciler.promotion.sshsig import NAMESPACE, AllowedSigner, SSHSigError, parse_allowed_signers

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(:[0-5]\d)?$|^24:00$")
MIN_SECRET = 16
DURATION_UNITS = ("s", "m", "h", "d")


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


# -- parsing ----------------------------------------------------------------------------------------
def _list(value: Any, where: str) -> list[Any]:
    return list(expect(value or [], list, where, "a list"))


def _read_secret(
    raw: Mapping[str, Any], where: str, base: Path, env_var: str, environ: Mapping[str, str]
) -> str:
    if environ.get(env_var):
        secret = environ[env_var]
    else:
        value = raw.get("secret_file")
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{where}.secret_file: required (or set {env_var})")
        path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PolicyError(f"{where}.secret_file: cannot read {path}: {exc.strerror}") from None
    return check_secret(secret, where, MIN_SECRET)


def _public_key(identity: str, line: Any, where: str) -> AllowedSigner:
    """One approver key: ``keytype base64 [comment]``."""
    if not isinstance(line, str):
        raise PolicyError(f"{where}: expected an SSH public key line (ssh-ed25519 AAAA... comment)")
    try:
        return parse_allowed_signers(f'"{identity}" {line}', where)[0]
    except (ValueError, IndexError) as exc:
        raise PolicyError(f"{where}: not a usable SSH public key ({exc})") from None


def _allowed_signers_file(value: Any, base: Path) -> list[AllowedSigner]:
    """The approvers' keys from an OpenSSH allowed_signers file (principals are approver identities)."""
    if value is None:
        return []
    where = "promotions.allowed_signers_file"
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where}: expected a file path")
    path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{where}: cannot read {path}: {exc.strerror}") from None
    try:
        return parse_allowed_signers(text, str(path))
    except (ValueError, SSHSigError) as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _signing_key(value: Any, base: Path) -> Path | None:
    """The daemon's own SSH private key for signing its promotion commits (checked to load)."""
    if value is None:
        return None
    where = "promotions.signing_key"
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where}: expected the path of an SSH private key file")
    path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
    try:
        sshsig.sign_with_key(path, b"reconciler: can this key sign?", namespace="git")
    except (OSError, SSHSigError) as exc:
        raise PolicyError(f"{where}: {path} cannot sign ({exc})") from None
    return path


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _window(raw: Any, where: str) -> Window:
    item = mapping(raw, where)
    unknown(item, {"allow", "deny", "days", "start", "end", "timezone"}, where)
    if ("allow" in item) == ("deny" in item):
        raise PolicyError(f"{where}: set exactly one of allow: true or deny: true")
    allow = boolean(item, "allow", where, True) if "allow" in item else not boolean(item, "deny", where, True)
    days_raw = _list(item.get("days", list(_DAYS)), f"{where}.days")
    days: set[int] = set()
    for day in days_raw:
        if str(day).lower()[:3] not in _DAYS:
            raise PolicyError(f"{where}.days: unknown day {day!r} (use mon..sun)")
        days.add(_DAYS.index(str(day).lower()[:3]))
    times: list[dt.time] = []
    for key, default in (("start", "00:00"), ("end", "24:00")):
        value = str(item.get(key, default))
        if not _TIME.fullmatch(value):
            raise PolicyError(f"{where}.{key}: expected HH:MM (or HH:MM:SS), got {value!r}")
        if value == "24:00":
            times.append(dt.time(0, 0))
        else:
            parts = [int(part) for part in value.split(":")] + [0]
            times.append(dt.time(parts[0], parts[1], parts[2]))
    timezone = str(item.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"{where}.timezone: unknown time zone {timezone!r}") from None
    if times[1] != dt.time(0, 0) and times[1] <= times[0]:
        raise PolicyError(f"{where}: end must be after start (split overnight windows in two)")
    return Window(allow, frozenset(days), times[0], times[1], timezone)


def parse(
    raw: Any, base: Path, environments: Iterable[str], environ: Mapping[str, str] | None = None
) -> PromotionSettings:
    """Validate the ``promotions:`` section; ``environments`` are the configured environment names.

    Secrets come from ``secret_file`` or from ``RECONCILER_APPROVER_<IDENTITY>_SECRET`` /
    ``RECONCILER_INTEGRATION_<NAME>_SECRET`` (non-alphanumerics become ``_``).
    """
    env = os.environ if environ is None else environ
    section = mapping(raw, "promotions")
    unknown(
        section,
        {
            "approvers",
            "allowed_signers_file",
            "integrations",
            "pipelines",
            "timestamp_window",
            "author",
            "signing_key",
        },
        "promotions",
    )
    known_envs = set(environments)
    shared = _allowed_signers_file(section.get("allowed_signers_file"), base)
    approvers: list[Approver] = []
    for index, item_raw in enumerate(_list(section.get("approvers"), "promotions.approvers")):
        where = f"promotions.approvers[{index}]"
        item = mapping(item_raw, where)
        if "secret_file" in item:
            raise PolicyError(
                f"{where}.secret_file: approvers sign with their own SSH keys (keys: or "
                "promotions.allowed_signers_file), so that nobody who can read the daemon's secrets can "
                "sign as them; HMAC secrets are for integrations only"
            )
        unknown(item, {"identity", "keys", "groups"}, where)
        identity = str(item.get("identity") or "")
        if not identity or identity.startswith("group:") or len(identity) > 200:
            raise PolicyError(f"{where}.identity: required (for example an e-mail address)")
        groups = frozenset(str(g) for g in _list(item.get("groups"), f"{where}.groups"))
        keys = [
            _public_key(identity, line, f"{where}.keys[{n}]")
            for n, line in enumerate(_list(item.get("keys"), f"{where}.keys"))
        ]
        keys += [signer for signer in shared if identity in signer.principals]
        if not keys:
            raise PolicyError(
                f"{where}.keys: {identity} has no SSH public key (list it here or in "
                "promotions.allowed_signers_file)"
            )
        approvers.append(Approver(identity, tuple(keys), groups))
    if len({a.identity for a in approvers}) != len(approvers):
        raise PolicyError("promotions.approvers: identities must be unique")
    listed = {a.identity for a in approvers}
    for signer in shared:
        strays = [p for p in signer.principals if p not in listed]
        if strays:
            raise PolicyError(
                f"promotions.allowed_signers_file: {', '.join(strays)} is not an approver "
                "(add it to promotions.approvers with its groups)"
            )
    integrations: list[Integration] = []
    for index, item_raw in enumerate(_list(section.get("integrations"), "promotions.integrations")):
        where = f"promotions.integrations[{index}]"
        item = mapping(item_raw, where)
        unknown(item, {"name", "secret_file", "identities"}, where)
        name = str(item.get("name") or "")
        if not _NAME.fullmatch(name):
            raise PolicyError(f"{where}.name: expected a lower-case name, got {name!r}")
        if any(a.identity == name for a in approvers):
            raise PolicyError(f"{where}.name: {name!r} is also an approver identity")
        identities = frozenset(str(i) for i in _list(item.get("identities"), f"{where}.identities"))
        secret = _read_secret(item, where, base, f"RECONCILER_INTEGRATION_{_env_key(name)}_SECRET", env)
        integrations.append(Integration(name, secret, identities))
    pipelines: list[Pipeline] = []
    for index, item_raw in enumerate(_list(section.get("pipelines"), "promotions.pipelines")):
        where = f"promotions.pipelines[{index}]"
        item = mapping(item_raw, where)
        unknown(
            item,
            {
                "name", "from", "to", "images", "files", "approvals", "approvers", "allow_self_approval",
                "soak", "windows", "expire_after", "auto_request", "timeout", "rollback",
            },
            where,
        )  # fmt: skip
        name = str(item.get("name") or "")
        if not _NAME.fullmatch(name):
            raise PolicyError(f"{where}.name: expected a lower-case name, got {name!r}")
        source, target = str(item.get("from") or ""), str(item.get("to") or "")
        for key, value in (("from", source), ("to", target)):
            if value not in known_envs:
                raise PolicyError(f"{where}.{key}: no environment named {value!r}")
        if source == target:
            raise PolicyError(f"{where}: from and to must differ")
        files = tuple(str(f) for f in _list(item.get("files"), f"{where}.files"))
        for file in files:
            if Path(file).is_absolute() or ".." in Path(file).parts or "/" in file:
                raise PolicyError(f"{where}.files: {file!r} must be a file name inside the overlay")
        images = boolean(item, "images", where, True)
        if not images and not files:
            raise PolicyError(f"{where}: promotes nothing (images: false and no files)")
        approvals = item.get("approvals", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
            raise PolicyError(f"{where}.approvals: expected a whole number of at least 1, got {approvals!r}")
        allowed = frozenset(str(a) for a in _list(item.get("approvers"), f"{where}.approvers"))
        if not allowed:
            raise PolicyError(f"{where}.approvers: list the identities (or group:NAME) allowed to approve")
        for entry in allowed:
            if not entry.startswith("group:") and not any(a.identity == entry for a in approvers):
                raise PolicyError(f"{where}.approvers: {entry!r} is not in promotions.approvers")
        rollback_raw = mapping(item.get("rollback"), f"{where}.rollback")
        unknown(rollback_raw, {"approvals", "soak"}, f"{where}.rollback")
        rollback_approvals = rollback_raw.get("approvals", approvals)
        if (
            isinstance(rollback_approvals, bool)
            or not isinstance(rollback_approvals, int)
            or rollback_approvals < 1
        ):
            raise PolicyError(f"{where}.rollback.approvals: expected a whole number of at least 1")
        pipelines.append(
            Pipeline(
                name=name,
                source=source,
                target=target,
                images=images,
                files=files,
                approvals=approvals,
                approvers=allowed,
                allow_self_approval=boolean(item, "allow_self_approval", where, False),
                soak=number(item, "soak", where, 0.0, units=DURATION_UNITS),
                windows=tuple(
                    _window(w, f"{where}.windows[{i}]")
                    for i, w in enumerate(_list(item.get("windows"), f"{where}.windows"))
                ),
                expire_after=number(item, "expire_after", where, 24 * 3600.0, units=DURATION_UNITS),
                auto_request=boolean(item, "auto_request", where, False),
                timeout=number(item, "timeout", where, 900.0, units=DURATION_UNITS),
                rollback=RollbackPolicy(
                    approvals=rollback_approvals,
                    soak=number(rollback_raw, "soak", f"{where}.rollback", 0.0, units=DURATION_UNITS),
                ),
            )
        )
    names = [p.name for p in pipelines]
    if len(set(names)) != len(names):
        raise PolicyError("promotions.pipelines: names must be unique")
    targets = [p.target for p in pipelines]
    if len(set(targets)) != len(targets):
        raise PolicyError("promotions.pipelines: one pipeline per target environment")
    author = mapping(section.get("author"), "promotions.author")
    unknown(author, {"name", "email"}, "promotions.author")
    signing_key = _signing_key(section.get("signing_key"), base)
    return PromotionSettings(
        signing_key=signing_key,
        pipelines=tuple(pipelines),
        approvers=tuple(approvers),
        integrations=tuple(integrations),
        timestamp_window=number(section, "timestamp_window", "promotions", 300.0, units=DURATION_UNITS),
        author_name=str(author.get("name", "reconciler")),
        author_email=str(author.get("email", "reconciler@localhost")),
    )
