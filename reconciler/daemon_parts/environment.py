"""What the daemon knows about one environment (``EnvironmentState``), the status the API and the
Environment object show of it, and how it is rendered and which engine syncs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.envstatus import changeset_summary, next_conditions, now_rfc3339
from reconciler.render import RenderOptions
from reconciler.render.restrictions import LoadPolicy
from reconciler.settings import EnvironmentConfig
from reconciler.source.gate import UNVERIFIED
from reconciler.sync import SyncResult


@dataclass
class EnvironmentState:
    """What the daemon knows about one environment."""

    config: EnvironmentConfig
    revision: str = ""
    input_key: str = ""
    result: SyncResult | None = None
    last_sync: float = 0.0
    last_success: float = 0.0
    syncs: int = 0
    applied_revision: str = ""  # the last revision applied completely (Synced), for status and metrics
    conditions: list[dict[str, Any]] = field(default_factory=list)  # kstatus: Ready/Reconciling/Stalled
    # since when the environment has been Ready at ``input_key`` (0: not Ready): promotions' soak time
    healthy_since: float = 0.0
    # the input key at the last fetched revision (which may not be synced yet) and the directories
    # whose contents it depends on (None: not known)
    latest_key: str = ""
    input_dirs: frozenset[str] | None = None
    # why a sync is held back by ``depends_on`` ("" when it is not)
    waiting_for: str = ""
    unverified: str = ""  # why the fetched head is refused (repository.verify); "" when it is not
    # the last sync that created, configured or deleted something: revision, time, summary (None: none
    # known); ``change_loaded`` once the Environment object was asked for one an earlier leader wrote
    last_change: dict[str, str] | None = None
    change_loaded: bool = False
    # the input key the running sync applies ("" when none runs): a fetch with other inputs supersedes it
    syncing_key: str = ""
    owner: str = ""  # with sharding: the replica that syncs it ("" without sharding)

    def __post_init__(self) -> None:
        if not self.conditions:
            self.conditions = next_conditions(
                [], "Reconciling", "Pending", "waiting for the first sync", now_rfc3339()
            )

    def message(self) -> str:
        """What the environment's condition says: the last sync's message, except when the environment
        is Ready and that sync changed nothing or ran at an older revision with the same inputs: then
        ``revision R: N objects unchanged since S``, S being the revision of the last change (never a
        no-op sync's "9 unchanged" hiding the change, nor a new revision beside an old one's message)."""
        result = self.result
        if result is None:
            return ""
        if not (result.ok and result.synced) or (
            result.changeset.changed and result.revision == self.revision
        ):
            return result.message
        since = self.last_change["revision"] if self.last_change else ""
        objects = len(result.changeset.entries)
        if not since:
            return f"revision {self.revision}: {objects} objects unchanged"
        return f"revision {self.revision}: {objects} objects unchanged since {since}"

    def status(self) -> dict[str, Any]:
        """JSON status for the API (also the source of the Environment object's status)."""
        result = self.result
        base: dict[str, Any] = {
            "name": self.config.name,
            "path": self.config.path,
            "cluster": self.config.cluster,
            **({"owner": self.owner} if self.owner else {}),
            "revision": self.revision,
            "appliedRevision": self.applied_revision,
            "conditions": self.conditions,
            "syncs": self.syncs,
            "lastSyncTime": self.last_sync or None,
            "lastSuccessTime": self.last_success or None,
            **({"lastAppliedChange": self.last_change} if self.last_change else {}),
        }
        # held back by depends_on: that is what the environment is doing now, whatever it did last
        held = (
            {"condition": "Reconciling", "reason": "DependencyNotReady", "message": self.waiting_for}
            if self.waiting_for
            else {}
        )
        if self.unverified:  # the head is refused: the last verified revision stays, nothing is synced
            held = {"condition": "Stalled", "reason": UNVERIFIED, "message": self.unverified}
        if result is None:
            return {
                **base,
                "sync": "Unknown",
                "health": "Unknown",
                "condition": "Reconciling",
                "reason": "Pending",
                **held,
            }
        summary = result.summary()
        return {
            **base,
            "sync": summary["sync"],
            "health": summary["health"],
            "condition": summary["condition"],
            "reason": summary["reason"],
            "message": self.message(),
            **held,
            "changes": summary["changes"],
            "lastChangeSet": changeset_summary(result.changeset),
            "unhealthy": summary["unhealthy"],
            "pruneBlocked": summary["pruneBlocked"],
            "inventoryObjects": result.inventory_size,
            "durations": summary["durations"],
            "lastError": result.error,
        }


def engine_key(env: EnvironmentConfig) -> str:
    """The engine that syncs ``env``: its cluster's, or its cluster's as its service account."""
    return f"{env.cluster}|{env.service_account}" if env.service_account else env.cluster


def render_options(kustomize: Path, env: EnvironmentConfig) -> RenderOptions:
    """How ``env`` is rendered: with ``kustomize``, under its load restrictions."""
    return RenderOptions(
        kustomize=kustomize,
        policy=LoadPolicy(
            allow_remote_bases=env.allow_remote_bases,
            allow_helm=env.allow_helm,
            allow_plugins=env.allow_plugins,
        ),
    )
