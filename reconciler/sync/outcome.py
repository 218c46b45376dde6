"""What a sync ends with: its options, its result, and the typed outcomes (condition and reason) that
the daemon, metrics, Events and status read.

``Condition`` is kstatus' Ready / Reconciling / Stalled; ``Reason`` names why, and says whether the
same inputs are worth retrying (the API server may recover, another environment may bring a namespace
or CRD) or must wait for a new revision (a render error, a policy violation, a blocked prune). Both are
``StrEnum``s, so they compare equal to (and serialize as) the strings the status API always showed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.health import HealthStatus
from reconciler.objects import ChangeSet
from reconciler.plan.prune import PruneOptions
from reconciler.tenancy import AccessPolicy, Violation
from reconciler.tenancy import message as policy_message

Progress = Callable[[str], None]

# The stages a sync's time is split into (``SyncResult.durations`` keys; metrics use exactly these).
# ``apply`` excludes the time spent waiting for health, which is ``health``.
STAGES = ("render", "plan", "validate", "apply", "health", "prune")


class Condition(enum.StrEnum):
    """The environment's kstatus condition after a sync."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(enum.StrEnum):
    """Why a sync ended as it did."""

    SUCCEEDED = "Succeeded"
    PROGRESSING = "Progressing"
    DRY_RUN = "DryRun"
    RENDER_FAILED = "RenderFailed"
    INVALID_MANIFEST = "InvalidManifest"
    POLICY_VIOLATION = "PolicyViolation"
    OWNERSHIP_CONFLICT = "OwnershipConflict"
    VALIDATION_FAILED = "ValidationFailed"
    APPLY_FAILED = "ApplyFailed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    PRUNE_BLOCKED = "PruneBlocked"
    CLUSTER_UNREACHABLE = "ClusterUnreachable"
    API_ERROR = "ApiError"

    @property
    def retryable(self) -> bool:
        """True when the same inputs may succeed later (retry with backoff); False when only a new
        revision (or an operator) can change the outcome."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        Reason.CLUSTER_UNREACHABLE,
        Reason.API_ERROR,
        Reason.VALIDATION_FAILED,
        Reason.APPLY_FAILED,
        Reason.HEALTH_CHECK_FAILED,
        Reason.OWNERSHIP_CONFLICT,
    }
)


def _unrestricted() -> AccessPolicy:
    return AccessPolicy(unrestricted=True)


@dataclass(frozen=True)
class SyncOptions:
    """Options of one sync."""

    environment: str
    revision: str = ""
    prune: PruneOptions = field(default_factory=PruneOptions)
    dry_run: bool = False
    wait: bool = True
    # also wait for objects this sync did not write (a one-shot sync exits only once all is healthy)
    wait_for_all: bool = True
    health_timeout: float = 300.0
    concurrency: int = 16
    # what the environment may change; the one-shot CLI (an operator's own credentials) is unrestricted
    # but for the daemon's own namespace and kinds, which nothing may write
    policy: AccessPolicy = field(default_factory=_unrestricted)
    # compute a redacted diff per written object (the CLI prints them; the daemon, which nobody reads
    # them from, saves the YAML dumps of every object it writes)
    diffs: bool = True


@dataclass
class SyncResult:
    """Everything a sync did and found: the ChangeSet plus the environment's status."""

    environment: str
    revision: str
    changeset: ChangeSet = field(default_factory=ChangeSet)
    health: HealthStatus = HealthStatus.UNKNOWN
    unhealthy: dict[str, str] = field(default_factory=dict)
    synced: bool = False
    condition: str = Condition.RECONCILING  # a Condition (a str, for the API and JSON)
    reason: str = ""  # a Reason ("" before the sync ends)
    message: str = ""
    rendered: bool = False
    prune_blocked: str = ""
    # seconds per stage of ``STAGES`` that ran, plus ``stage <name>`` per applied stage (apply + wait)
    durations: dict[str, float] = field(default_factory=dict)
    inventory_size: int | None = None  # objects in the inventory written by this sync (None: not written)
    input_hash: str = ""  # the render cache key of the inputs synced ("" when the render failed)
    violations: list[Violation] = field(default_factory=list)  # objects outside the access policy

    @property
    def ok(self) -> bool:
        """True when everything was applied, pruned and is healthy."""
        return self.condition == Condition.READY

    @property
    def error(self) -> str:
        """The failure message, "" when the sync succeeded."""
        return "" if self.ok else self.message

    @property
    def retryable(self) -> bool:
        """True when this failure may go away with the same inputs (see ``Reason.retryable``)."""
        try:
            return Reason(self.reason).retryable
        except ValueError:
            return False

    def end(self, condition: Condition, reason: Reason, message: str) -> None:
        """Set the outcome."""
        self.condition, self.reason, self.message = condition, reason, message

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly status for CLIs, APIs and logs (no diffs)."""
        return {
            "environment": self.environment,
            "revision": self.revision,
            "sync": "Synced" if self.synced else "OutOfSync",
            "health": self.health.value,
            "condition": str(self.condition),
            "reason": str(self.reason),
            "message": self.message,
            "changes": self.changeset.counts(),
            "unhealthy": self.unhealthy,
            "pruneBlocked": self.prune_blocked,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
        }


class SyncFailedError(Exception):
    """A stage failed; carries the reason for the status."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PolicyViolationError(SyncFailedError):
    """Objects outside the environment's access policy: the revision is refused before any write."""

    def __init__(self, violations: list[Violation], policy: AccessPolicy) -> None:
        super().__init__(Reason.POLICY_VIOLATION, policy_message(violations, policy))
        self.violations = violations


def failure_message(failures: list[tuple[Any, str]], what: str, limit: int = 10) -> str:
    """``N object(s) WHAT, nothing was written: KEY: message; ...`` (the first ``limit``)."""
    shown = "; ".join(f"{key}: {message}" for key, message in failures[:limit])
    more = f" (and {len(failures) - limit} more)" if len(failures) > limit else ""
    return f"{len(failures)} object(s) {what}, nothing was written: {shown}{more}"
