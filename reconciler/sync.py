"""The sync of one environment: the only place where the stages are strung together.

    render -> plan -> validate (server dry-run) -> inventory (previous ∪ desired) -> apply by stage,
    waiting for health -> prune -> inventory (final) -> result

Semantics a user can rely on:

* **Validation before the first write.** Every object that may change is applied with
  ``dryRun=All`` first, concurrently. If any is refused, nothing is written for that revision and the
  error names every refused object with the API server's message. Objects in a namespace that the same
  change creates are dry-run in the ``default`` namespace instead (schema, defaulting and admission
  all run; only namespace-specific policy does not). Custom resources whose CustomResourceDefinition
  arrives in the same change cannot be dry-run before the CRD exists: they are validated right after
  the CRD and Namespace stage is applied and Established, before any other write; if they are refused
  then, only that stage has been written.
* **No needless writes.** An object whose manifest hash equals the one recorded in the inventory and
  whose live state already holds every desired field is not even dry-run; an object whose dry-run
  result equals the live object is not written. A no-op re-sync with warm watch caches makes no write.
* **Ordered apply.** Stages from ``plan.ordering``; each stage that wrote something is waited on until
  healthy (bounded by the health timeout, which reports every object that is not healthy and why).
* **Access policy before anything.** Every rendered object is checked against the environment's
  ``AccessPolicy`` (``reconciler.tenancy``: the daemon's own namespace and kinds, allowed namespaces,
  allowed cluster-scoped kinds) before the first dry-run: one violation refuses the whole revision,
  naming every offending object, with zero writes and no prune.
* **Secret values never in a message.** Every message of the result (and of drift corrections) is
  scrubbed of the Secret values the render holds, in every form an error may quote them.
* **Safe prune.** Only after every stage succeeded, only what ``plan.prune`` allows, and never when the
  render is empty or failed, or the circuit breaker trips.
* **Crash safety.** The inventory is written before the first object write and after the prune, so a
  sync killed at any point leaves an inventory that covers everything it may have created.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from reconciler.drift import FightGuard, other_managers
from reconciler.health import Health, HealthStatus, aggregate, assess
from reconciler.inventory import Inventory, InventoryEntry, InventoryStore
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import ApplyOptions, KubeClient
from reconciler.kube.errors import ConflictError, ImmutableFieldError, KubeError, NoMatchError, NotFoundError
from reconciler.objects import (
    ADOPT_ANNOTATION,
    ENVIRONMENT_ANNOTATION,
    FIELD_MANAGER,
    FORCE_CONFLICTS_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RECREATE_ANNOTATION,
    Action,
    Body,
    ChangeSet,
    ChangeSetEntry,
    Manifest,
    ObjectKey,
    content_hash,
    environment_mark,
)
from reconciler.plan.compare import drift
from reconciler.plan.diff import for_display, scrub, secret_values, unified_diff
from reconciler.plan.hpa import hpa_targets, owns_replicas, release_autoscaled_replicas
from reconciler.plan.ordering import Stage, WaveError, plan_stages
from reconciler.plan.prune import PruneOptions, plan_prune
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.tenancy import AccessPolicy, Target, Violation, own_namespaces, reserved_reason
from reconciler.tenancy import check as check_policy
from reconciler.tenancy import message as policy_message

log = structlog.get_logger(__name__)

Progress = Callable[[str], None]
HANDOFF_MANAGER = "reconciler-replicas-handoff"
DEGRADED_GRACE = 10.0
IMMUTABLE_ADVICE = (
    f' (the object must be recreated to change this field; annotate it {RECREATE_ANNOTATION}: "true" '
    "to let reconciler delete and recreate it)"
)


# The stages a sync's time is split into (``SyncResult.durations`` keys; metrics use exactly these).
# ``apply`` excludes the time spent waiting for health, which is ``health``.
STAGES = ("render", "plan", "validate", "apply", "health", "prune")


def _quiet(_: str) -> None:
    return None


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
    policy: AccessPolicy = field(default_factory=lambda: AccessPolicy(unrestricted=True))


@dataclass
class SyncResult:
    """Everything a sync did and found: the ChangeSet plus the environment's status."""

    environment: str
    revision: str
    changeset: ChangeSet = field(default_factory=ChangeSet)
    health: HealthStatus = HealthStatus.UNKNOWN
    unhealthy: dict[str, str] = field(default_factory=dict)
    synced: bool = False
    condition: str = "Reconciling"  # Ready | Reconciling | Stalled
    reason: str = ""
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
        return self.condition == "Ready"

    @property
    def error(self) -> str:
        """The failure message, "" when the sync succeeded."""
        return "" if self.ok else self.message

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly status for CLIs, APIs and logs (no diffs)."""
        return {
            "environment": self.environment,
            "revision": self.revision,
            "sync": "Synced" if self.synced else "OutOfSync",
            "health": self.health.value,
            "condition": self.condition,
            "reason": self.reason,
            "message": self.message,
            "changes": self.changeset.counts(),
            "unhealthy": self.unhealthy,
            "pruneBlocked": self.prune_blocked,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
        }


class SyncFailedError(Exception):
    """A stage failed; carries the reason for the status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PolicyViolationError(SyncFailedError):
    """Objects outside the environment's access policy: the revision is refused before any write."""

    def __init__(self, violations: list[Violation], policy: AccessPolicy) -> None:
        super().__init__("PolicyViolation", policy_message(violations, policy))
        self.violations = violations


def _marked_for_other(body: Body, environment: str) -> bool:
    """True when ``body`` carries another environment's mark."""
    return environment_mark(body) not in ("", environment)


def mark_owned(manifest: Manifest, environment: str) -> Manifest:
    """The manifest with our ownership label and environment annotation."""
    body = manifest.copy_body()
    metadata = body.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ENVIRONMENT_ANNOTATION: environment}
    return manifest.with_body(body)


def initial_replicas(manifests: Sequence[Manifest]) -> dict[ObjectKey, int]:
    """Replica count to create each HPA-scaled workload with: Git's value, at least the HPA's minimum."""
    by_key = {m.key: m for m in manifests}
    result: dict[ObjectKey, int] = {}
    for workload, hpa_key in hpa_targets(manifests).items():
        hpa = by_key.get(hpa_key)
        target = by_key.get(workload)
        if hpa is None or target is None:
            continue
        minimum = int((hpa.body.get("spec") or {}).get("minReplicas") or 1)
        declared = (target.body.get("spec") or {}).get("replicas")
        result[workload] = max(minimum, int(declared)) if isinstance(declared, int) else minimum
    return result


def prepare(manifests: Sequence[Manifest], environment: str) -> list[Manifest]:
    """Desired state as applied: ownership marks added, autoscaled replicas released."""
    return release_autoscaled_replicas([mark_owned(m, environment) for m in manifests])


def _comparable(body: Body) -> Body:
    return for_display(body) or {}


def _crd_kinds(manifests: Iterable[Manifest]) -> set[tuple[str, str]]:
    kinds: set[tuple[str, str]] = set()
    for manifest in manifests:
        if manifest.key.kind == "CustomResourceDefinition":
            spec = manifest.body.get("spec") or {}
            kinds.add((str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))))
    return kinds


@dataclass
class _Item:
    manifest: Manifest
    hash: str
    live: Body | None = None
    dry_run: Body | None = None
    needs_write: bool = False
    deferred: bool = False
    autoscaled: bool = False
    crd_known: bool = True
    recreate: bool = False
    initial_replicas: int | None = None


class Engine:
    """Syncs environments against one cluster; keeps desired state for drift correction."""

    def __init__(
        self,
        client: KubeClient,
        *,
        inventory: InventoryStore | None = None,
        cache: LiveCache | None = None,
        renderer: Renderer | None = None,
        guard: FightGuard | None = None,
    ) -> None:
        self.client = client
        self.inventory = inventory or InventoryStore(client)
        self.cache = cache
        self.renderer = renderer or Renderer()
        self.guard = guard or FightGuard()
        self._desired: dict[str, dict[ObjectKey, Manifest]] = {}
        self._revisions: dict[str, str] = {}  # the revision each environment's desired state comes from
        self._owner: dict[ObjectKey, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending_corrections: set[ObjectKey] = set()
        self._secret_values: dict[str, frozenset[str]] = {}  # per environment, for scrubbing messages
        self._correction_tasks: set[asyncio.Task[None]] = set()
        self.drift_events: list[ChangeSetEntry] = []
        self.on_drift: Callable[[str, ChangeSetEntry], None] | None = None
        if cache is not None:
            cache.subscribe(self._on_live_event)

    def lock(self, environment: str) -> asyncio.Lock:
        """The lock that serializes syncs and drift corrections of one environment."""
        return self._locks.setdefault(environment, asyncio.Lock())

    # -- entry points ----------------------------------------------------------------------------
    async def sync_directory(
        self,
        root: Path,
        environment_path: Path,
        render_options: RenderOptions,
        options: SyncOptions,
        progress: Progress = _quiet,
    ) -> SyncResult:
        """Render ``environment_path`` (inside repository ``root``) and sync it."""
        result = SyncResult(options.environment, options.revision)
        started = time.monotonic()
        try:
            rendered = await self.renderer.render(root, environment_path, render_options)
        except RenderError as exc:
            result.condition, result.reason, result.message = "Stalled", "RenderFailed", str(exc)
            result.durations["render"] = time.monotonic() - started
            progress(f"render failed: {exc}; nothing applied, nothing pruned, the previous state stays")
            log.warning(
                "render failed", environment=options.environment, revision=options.revision, error=str(exc)
            )
            return result
        result.durations["render"] = rendered.duration
        result.input_hash = rendered.input_hash
        progress(
            f"rendered {len(rendered.manifests)} objects"
            + (" (cached: inputs unchanged)" if rendered.cached else "")
        )
        return await self.sync(
            list(rendered.manifests), options, progress, result=result, rendered=not rendered.cached
        )

    async def sync(
        self,
        manifests: Sequence[Manifest],
        options: SyncOptions,
        progress: Progress = _quiet,
        *,
        result: SyncResult | None = None,
        rendered: bool = False,
    ) -> SyncResult:
        """Sync already-rendered manifests; see the module docstring for the semantics."""
        result = result or SyncResult(options.environment, options.revision)
        result.rendered = rendered
        structlog.contextvars.bind_contextvars(environment=options.environment, revision=options.revision)
        hidden = secret_values(m.body for m in manifests)
        self._secret_values[options.environment] = hidden
        async with self.lock(options.environment):
            try:
                await self._sync(manifests, options, progress, result)
            except SyncFailedError as failure:
                if isinstance(failure, PolicyViolationError):
                    result.violations = failure.violations
                message = scrub(failure.message, hidden)
                result.condition, result.reason, result.message = "Stalled", failure.reason, message
                progress(f"{failure.reason}: {message}")
            except KubeError as exc:
                reason = "ClusterUnreachable" if exc.retryable else "ApiError"
                message = scrub(str(exc), hidden)
                result.condition, result.reason, result.message = "Stalled", reason, message
                progress(f"{reason}: {message}")
        if hidden:
            result.changeset.entries = [
                replace(e, message=scrub(e.message, hidden)) if e.message else e
                for e in result.changeset.entries
            ]
        log.info(
            "sync finished",
            condition=result.condition,
            reason=result.reason,
            health=result.health.value,
            changes=result.changeset.summary(),
        )
        return result

    # -- the pipeline ----------------------------------------------------------------------------
    async def _sync(
        self, manifests: Sequence[Manifest], options: SyncOptions, progress: Progress, result: SyncResult
    ) -> None:
        env = options.environment
        desired = prepare(manifests, env)
        try:
            stages = plan_stages(desired)
        except WaveError as exc:
            raise SyncFailedError("InvalidManifest", str(exc)) from None
        previous = await self.inventory.load(env) or Inventory()

        # plan: live state and what needs writing
        clock = time.monotonic()
        autoscaled = hpa_targets(desired)
        initial = initial_replicas(manifests)
        items = {
            m.key: _Item(
                m, content_hash(m.body), autoscaled=m.key in autoscaled, initial_replicas=initial.get(m.key)
            )
            for m in desired
        }
        await self._check_policy(items, options)
        crd_kinds = _crd_kinds(desired)
        await self._load_live(items, crd_kinds)
        self._refuse_foreign(items.values(), env)
        for key, item in items.items():
            entry = previous.entries.get(key)
            unchanged = (
                item.live is not None
                and entry is not None
                and entry.applied_hash == item.hash
                and not drift(item.manifest.body, item.live)
            )
            item.needs_write = not unchanged
            if unchanged:
                result.changeset.add(ChangeSetEntry(key, Action.UNCHANGED))
        result.durations["plan"] = time.monotonic() - clock

        # validate: server-side dry-run of everything that may change, before any write
        clock = time.monotonic()
        new_namespaces = await self._new_namespaces(items)
        for item in items.values():
            if item.needs_write and item.manifest.key.namespace in new_namespaces:
                item.deferred = True
        candidates = [item for item in items.values() if item.needs_write and not item.deferred]
        stand_ins = [
            item
            for item in items.values()
            if item.deferred and item.manifest.key.namespace in new_namespaces and item.crd_known
        ]
        direct, stood_in = await asyncio.gather(
            self._dry_run_all(candidates, options.concurrency),
            self._dry_run_all(stand_ins, options.concurrency, stand_in_namespace="default"),
        )
        failures = sorted(direct + stood_in)
        if failures:
            raise SyncFailedError(
                "ValidationFailed", self._failure_message(failures, "refused by the API server")
            )
        for item in candidates:
            self._settle_dry_run(item, result)
        deferred = [item for item in items.values() if item.deferred]
        result.durations["validate"] = time.monotonic() - clock
        to_write = [item for item in items.values() if item.needs_write]
        progress(
            f"validated {len(candidates)} objects by server-side dry-run; "
            f"{len(to_write)} to apply, {len(items) - len(to_write)} unchanged"
            + (
                f"; {len(deferred)} objects in new namespaces were validated in a stand-in namespace"
                if any(item.crd_known for item in deferred)
                else ""
            )
            + (
                "; custom resources of new CRDs are validated once their CRDs are established"
                if any(not item.crd_known for item in deferred)
                else ""
            )
        )

        prune_candidates = previous.keys - set(items)
        if options.dry_run:
            for item in to_write:
                key = item.manifest.key
                action = Action.CREATED if item.live is None else Action.CONFIGURED
                after = item.dry_run if item.dry_run is not None else item.manifest.body
                result.changeset.add(ChangeSetEntry(key, action, unified_diff(key, item.live, after)))
            await self._prune(previous, items, options, result, progress, dry_run=True)
            result.synced = not to_write and not prune_candidates
            result.condition, result.reason = "Ready", "DryRun"
            result.message = f"dry run: {result.changeset.summary()}"
            return

        # inventory first: everything we may create is recorded before it exists
        before = previous.merged(
            {
                key: InventoryEntry(item.manifest.api_version, key, "" if item.needs_write else item.hash)
                for key, item in items.items()
            }
        )
        before.revision = previous.revision
        if before.to_json() != previous.to_json():
            await self.inventory.save(env, before)

        # apply, stage by stage
        applied_hashes: dict[ObjectKey, str] = {
            key: item.hash for key, item in items.items() if not item.needs_write
        }
        clock = time.monotonic()
        try:
            # objects of CRDs that did not exist are validated once the CRDs are established; objects in
            # new namespaces were validated in a stand-in namespace and are not dry-run a second time
            pending = [item for item in items.values() if item.deferred and not item.crd_known]
            for stage in stages:
                if pending and stage.name != "cluster-definitions":
                    await self._validate_deferred(pending, options, result, progress)
                    pending = []
                await self._apply_stage(stage, items, options, result, progress, applied_hashes)
        finally:
            result.durations["apply"] = time.monotonic() - clock - result.durations.get("health", 0.0)
            if applied_hashes:
                after_apply = before.merged(
                    {
                        key: InventoryEntry(items[key].manifest.api_version, key, digest)
                        for key, digest in applied_hashes.items()
                    }
                )
                if after_apply.to_json() != before.to_json():
                    await self.inventory.save(env, after_apply)
                    before = after_apply

        # prune
        clock = time.monotonic()
        keep = await self._prune(previous, items, options, result, progress, dry_run=False)
        result.durations["prune"] = time.monotonic() - clock
        final = Inventory.of(
            [
                InventoryEntry(item.manifest.api_version, key, applied_hashes.get(key, ""))
                for key, item in items.items()
            ]
            + [previous.entries[key] for key in keep],
            revision=options.revision or previous.revision,
        )
        if final.to_json() != before.to_json():
            await self.inventory.save(env, final)
        result.inventory_size = len(final.entries)

        # health of everything, and the environment's status
        self._desired[env] = {key: item.manifest for key, item in items.items()}
        self._revisions[env] = options.revision
        for key in items:
            self._owner[key] = env
        everything = [item.manifest for item in items.values()]
        clock = time.monotonic()
        if options.wait and options.wait_for_all:
            try:
                await self._wait_healthy(
                    Stage("all objects", tuple(everything)), options.health_timeout, progress
                )
            except SyncFailedError as failure:
                progress(failure.message)
        healths = await self._healths(everything)
        result.durations["health"] = result.durations.get("health", 0.0) + time.monotonic() - clock
        result.health = aggregate(healths.values())
        result.unhealthy = {
            str(k): f"{h.status.value}: {h.message}" for k, h in healths.items() if not h.ready
        }
        for item in to_write:
            self.guard.reset(item.manifest.key)
        result.synced = not result.prune_blocked
        if result.prune_blocked:
            result.condition, result.reason, result.message = "Stalled", "PruneBlocked", result.prune_blocked
        elif result.health in (HealthStatus.HEALTHY, HealthStatus.SUSPENDED):
            result.condition, result.reason = "Ready", "Succeeded"
            result.message = (
                f"applied revision {options.revision or '(working tree)'}: {result.changeset.summary()}"
            )
        else:
            result.condition, result.reason = "Reconciling", "Progressing"
            result.message = f"{len(result.unhealthy)} objects not healthy yet"
        progress(f"{result.condition}: {result.message}")

    # -- live state ------------------------------------------------------------------------------
    async def _load_live(self, items: dict[ObjectKey, _Item], crd_kinds: set[tuple[str, str]]) -> None:
        by_kind: dict[tuple[str, str], list[_Item]] = {}
        for item in items.values():
            by_kind.setdefault((item.manifest.api_version, item.manifest.key.kind), []).append(item)

        async def load(api_version: str, kind: str, group_items: list[_Item]) -> None:
            try:
                info = await self.client.resource(api_version, kind)
            except NoMatchError:
                group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
                if (group, kind) in crd_kinds:
                    for item in group_items:
                        item.deferred = True
                        item.needs_write = True
                        item.crd_known = False
                    return
                raise
            if self.cache is not None:
                await self.cache.ensure(info)
                for item in group_items:
                    item.live = self.cache.get(item.manifest.key)
                return
            found: dict[tuple[str, str], Body] = {}
            listing = await self.client.list(info, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
            for obj in listing[0]:
                metadata = obj.get("metadata") or {}
                found[(str(metadata.get("namespace") or ""), str(metadata.get("name")))] = obj
            for item in group_items:
                key = item.manifest.key
                item.live = found.get((key.namespace if info.namespaced else "", key.name))

        await asyncio.gather(*(load(av, kind, group) for (av, kind), group in by_kind.items()))

    # -- validation ------------------------------------------------------------------------------
    async def _dry_run_all(
        self, items: Sequence[_Item], concurrency: int, *, stand_in_namespace: str = ""
    ) -> list[tuple[ObjectKey, str]]:
        """Dry-run every item; with ``stand_in_namespace``, in that namespace instead of their own.

        The stand-in is how objects whose namespace does not exist yet are validated before the first
        write: schema, defaulting and admission all run; only the namespace differs.
        """
        semaphore = asyncio.Semaphore(concurrency)
        failures: list[tuple[ObjectKey, str]] = []

        async def one(item: _Item) -> None:
            body = item.manifest.body
            if stand_in_namespace:
                body = item.manifest.copy_body()
                body["metadata"]["namespace"] = stand_in_namespace
            async with semaphore:
                try:
                    answer = await self.client.apply(body, self._apply_options(item.manifest, dry_run=True))
                except ImmutableFieldError as exc:
                    if item.manifest.annotation(RECREATE_ANNOTATION).lower() == "true":
                        item.recreate = True
                    else:
                        failures.append((item.manifest.key, exc.api_message + IMMUTABLE_ADVICE))
                    return
                except KubeError as exc:
                    failures.append((item.manifest.key, exc.api_message))
                    return
                if not stand_in_namespace:
                    item.dry_run = answer

        await asyncio.gather(*(one(item) for item in items))
        return sorted(failures)

    async def _check_policy(self, items: dict[ObjectKey, _Item], options: SyncOptions) -> None:
        """Refuse the revision, before any other request about its objects, when one of them is outside
        the access policy (reads only: discovery, and the Namespaces it declares when the policy is
        "the namespaces its render creates")."""
        policy = self._policy(options)
        crd_scopes: dict[tuple[str, str], bool] = {}
        for key, item in items.items():
            if key.kind == "CustomResourceDefinition":
                spec = item.manifest.body.get("spec") or {}
                kind = str((spec.get("names") or {}).get("kind", ""))
                crd_scopes[(str(spec.get("group", "")), kind)] = spec.get("scope") != "Cluster"
        targets: list[Target] = []
        for key, item in items.items():
            try:
                info = await self.client.resource(item.manifest.api_version, key.kind)
                namespaced: bool | None = info.namespaced
            except NoMatchError:
                namespaced = crd_scopes.get((key.group, key.kind))
            targets.append(Target(key, namespaced))
        declared = [key.name for key in items if key.kind == "Namespace" and key.group == ""]
        foreign: set[str] = set()
        if policy.namespaces is None and not policy.unrestricted:
            for name in declared:
                live = await self._live_namespace(name)
                if live is not None and environment_mark(live) != options.environment:
                    foreign.add(name)  # exists, and this environment does not manage it
        violations = check_policy(targets, policy, own_namespaces(declared, foreign, policy))
        if violations:
            raise PolicyViolationError(violations, policy)

    def _policy(self, options: SyncOptions) -> AccessPolicy:
        """The options' access policy, with this engine's inventory namespace reserved too."""
        policy = options.policy
        if self.inventory.namespace in policy.reserved_namespaces:
            return policy
        return replace(policy, reserved_namespaces=policy.reserved_namespaces | {self.inventory.namespace})

    async def _live_namespace(self, name: str) -> Body | None:
        key = ObjectKey("", "Namespace", "", name)
        if self.cache is not None and self.cache.watching(key):
            cached = self.cache.get(key)
            if cached is not None:  # the cache holds only what we manage: an absent one may still exist
                return cached
        return await self.client.get("v1", "Namespace", "", name)

    @classmethod
    def _refuse_foreign(cls, items: Iterable[_Item], environment: str) -> None:
        """Refuse, before any write, to apply objects another environment manages.

        Two environments declaring one object would take it from each other on every sync (each
        rewriting the fields and the environment mark), and the one that loses it could never prune
        it. The object is named with its owner; annotating it ``reconciler.dev/adopt: "true"`` in this
        environment takes it over on purpose (after which the other environment is refused in turn
        until it drops it)."""
        foreign = sorted(
            (item.manifest.key, f"managed by environment {environment_mark(item.live)!r}")
            for item in items
            if item.live is not None
            and _marked_for_other(item.live, environment)
            and item.manifest.annotation(ADOPT_ANNOTATION, "false").lower() != "true"
        )
        if foreign:
            raise SyncFailedError(
                "OwnershipConflict",
                cls._failure_message(foreign, "managed by another environment")
                + f'. Declare each object in one environment only, or annotate it {ADOPT_ANNOTATION}: "true" '
                "in this one to take it over.",
            )

    @staticmethod
    def _failure_message(failures: Sequence[tuple[ObjectKey, str]], what: str) -> str:
        shown = "; ".join(f"{key}: {message}" for key, message in failures[:10])
        more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
        return f"{len(failures)} object(s) {what}, nothing was written: {shown}{more}"

    @staticmethod
    def _settle_dry_run(item: _Item, result: SyncResult) -> None:
        """Decide from the dry-run answer whether the object really needs a write."""
        if item.dry_run is None:  # validated by the stand-in namespace, or to be recreated
            return
        if item.live is not None and _comparable(item.dry_run) == _comparable(item.live):
            item.needs_write = False
            result.changeset.add(ChangeSetEntry(item.manifest.key, Action.UNCHANGED))

    @staticmethod
    def _apply_options(manifest: Manifest, *, dry_run: bool = False) -> ApplyOptions:
        force = manifest.annotation(FORCE_CONFLICTS_ANNOTATION, "true").lower() != "false"
        return ApplyOptions(field_manager=FIELD_MANAGER, force=force, dry_run=dry_run)

    async def _new_namespaces(self, items: dict[ObjectKey, _Item]) -> set[str]:
        """Namespaces this render creates that do not exist yet."""
        candidates = [
            item.manifest.key.name
            for item in items.values()
            if item.manifest.key.kind == "Namespace" and item.manifest.key.group == "" and item.live is None
        ]
        if not candidates:
            return set()
        if len(candidates) <= 3:
            lives = await asyncio.gather(
                *(self.client.get("v1", "Namespace", "", name) for name in candidates)
            )
            return {name for name, live in zip(candidates, lives, strict=True) if live is None}
        existing, _ = await self.client.list(await self.client.resource("v1", "Namespace"))
        names = {str(ns["metadata"]["name"]) for ns in existing}
        return {name for name in candidates if name not in names}

    async def _validate_deferred(
        self, pending: Sequence[_Item], options: SyncOptions, result: SyncResult, progress: Progress
    ) -> None:
        """Dry-run the objects that needed the cluster-definitions stage, before any other write."""
        for item in pending:
            self.client.forget(item.manifest.api_version)
            item.deferred = False
        failures = await self._dry_run_all(pending, options.concurrency)
        if failures:
            raise SyncFailedError(
                "ValidationFailed",
                self._failure_message(failures, "refused once their namespaces and CRDs existed").replace(
                    "nothing was written", "only the CRD and Namespace stage was written"
                ),
            )
        for item in pending:
            self._settle_dry_run(item, result)
        progress(f"validated {len(pending)} objects that needed new namespaces or CRDs")

    # -- apply -----------------------------------------------------------------------------------
    async def _apply_stage(
        self,
        stage: Stage,
        items: dict[ObjectKey, _Item],
        options: SyncOptions,
        result: SyncResult,
        progress: Progress,
        applied_hashes: dict[ObjectKey, str],
    ) -> None:
        stage_items = [items[m.key] for m in stage.manifests]
        to_write = [item for item in stage_items if item.needs_write]
        if not to_write:
            return
        clock = time.monotonic()
        semaphore = asyncio.Semaphore(options.concurrency)
        apply_failures: list[tuple[ObjectKey, str]] = []

        async def one(item: _Item) -> None:
            async with semaphore:
                try:
                    entry = await self._apply_one(item)
                except KubeError as exc:
                    apply_failures.append((item.manifest.key, exc.api_message))
                    result.changeset.add(
                        ChangeSetEntry(item.manifest.key, Action.FAILED, message=exc.api_message)
                    )
                    return
                applied_hashes[item.manifest.key] = item.hash
                result.changeset.add(entry)

        await asyncio.gather(*(one(item) for item in to_write))
        if apply_failures:
            raise SyncFailedError(
                "ApplyFailed",
                self._failure_message(sorted(apply_failures), "failed to apply").replace(
                    ", nothing was written", f" in stage {stage.name}"
                ),
            )
        progress(f"stage {stage.name}: applied {len(to_write)} objects")
        if stage.name == "cluster-definitions":
            for item in to_write:
                if item.manifest.key.kind == "CustomResourceDefinition":
                    spec = item.manifest.body.get("spec") or {}
                    for version in spec.get("versions") or []:
                        self.client.forget(f"{spec.get('group')}/{version.get('name')}")
        if stage.wait and options.wait:
            waited = time.monotonic()
            try:
                await self._wait_healthy(stage, options.health_timeout, progress)
            finally:
                result.durations["health"] = result.durations.get("health", 0.0) + time.monotonic() - waited
        result.durations[f"stage {stage.name}"] = time.monotonic() - clock

    async def _apply_one(self, item: _Item) -> ChangeSetEntry:
        manifest = item.manifest
        key = manifest.key
        if item.autoscaled and item.live is not None:
            await self._hand_off_replicas(manifest, item.live)
        action = Action.CREATED if item.live is None else Action.CONFIGURED
        message = ""
        try:
            if item.recreate:
                raise ImmutableFieldError(str(key), "validation found an immutable field change", 422)
            body = manifest.body
            if item.live is None and item.initial_replicas is not None:
                # created at the size the autoscaler will keep it at; handed over on the next apply
                body = manifest.copy_body()
                body.setdefault("spec", {})["replicas"] = item.initial_replicas
            applied = await self.client.apply(body, self._apply_options(manifest))
        except ImmutableFieldError as exc:
            if manifest.annotation(RECREATE_ANNOTATION).lower() != "true":
                raise ImmutableFieldError(
                    str(key), exc.api_message + IMMUTABLE_ADVICE, exc.status, exc.reason
                ) from None
            await self._recreate(manifest)
            applied = await self.client.apply(manifest.body, self._apply_options(manifest))
            action, message = Action.CREATED, "recreated: an immutable field changed"
        except ConflictError as exc:
            raise ConflictError(
                str(key),
                f"{exc.api_message} — another field manager owns these fields and "
                f'{FORCE_CONFLICTS_ANNOTATION} is "false"',
                exc.status,
                exc.reason,
            ) from None
        diff = unified_diff(key, item.live, item.dry_run or applied)
        return ChangeSetEntry(key, action, diff, message)

    async def _hand_off_replicas(self, manifest: Manifest, live: Body) -> None:
        """Keep the live replica count when we stop declaring it (an HPA now scales the workload).

        Without this, dropping ``spec.replicas`` from our apply would remove the field (we were its only
        owner) and the workload would scale down to its default of one replica.
        """
        if not owns_replicas(live, FIELD_MANAGER):
            return
        replicas = (live.get("spec") or {}).get("replicas")
        if replicas is None:
            return
        key = manifest.key
        body = {
            "apiVersion": manifest.api_version,
            "kind": key.kind,
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": {"replicas": replicas},
        }
        await self.client.apply(body, ApplyOptions(field_manager=HANDOFF_MANAGER, force=True))

    async def _recreate(self, manifest: Manifest, timeout: float = 60.0) -> None:
        key = manifest.key
        await self.client.delete(
            manifest.api_version, key.kind, key.namespace, key.name, propagation="Foreground"
        )
        deadline = time.monotonic() + timeout
        delay = 0.1
        while await self.client.get(manifest.api_version, key.kind, key.namespace, key.name) is not None:
            if time.monotonic() > deadline:
                raise KubeError(str(key), f"still present {timeout:.0f} s after deleting it for recreation")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # -- health ----------------------------------------------------------------------------------
    async def _live_of(self, manifest: Manifest) -> Body | None:
        key = manifest.key
        if self.cache is not None and self.cache.watching(key):
            return self.cache.get(key)
        return await self.client.get(manifest.api_version, key.kind, key.namespace, key.name)

    async def _healths(self, manifests: Sequence[Manifest]) -> dict[ObjectKey, Health]:
        lives = await asyncio.gather(*(self._live_of(m) for m in manifests))
        return {m.key: assess(live) for m, live in zip(manifests, lives, strict=True)}

    async def _wait_healthy(self, stage: Stage, timeout: float, progress: Progress) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            healths = await self._healths(stage.manifests)
            waiting = {key: h for key, h in healths.items() if not h.ready}
            if not waiting:
                progress(f"stage {stage.name}: {len(healths)} objects healthy")
                return
            elapsed = time.monotonic() - started
            # Degraded is a verdict, not a phase: give it a short grace period, not the whole timeout.
            degraded = any(h.status == HealthStatus.DEGRADED for h in waiting.values())
            if elapsed > timeout or (degraded and elapsed > min(timeout, DEGRADED_GRACE)):
                details = "; ".join(
                    f"{key}: {h.status.value}: {h.message}" for key, h in sorted(waiting.items())[:10]
                )
                raise SyncFailedError(
                    "HealthCheckFailed",
                    f"stage {stage.name}: {len(waiting)} object(s) not healthy after "
                    f"{elapsed:.0f} s: {details}",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # -- prune -----------------------------------------------------------------------------------
    async def _prune(
        self,
        previous: Inventory,
        items: dict[ObjectKey, _Item],
        options: SyncOptions,
        result: SyncResult,
        progress: Progress,
        *,
        dry_run: bool,
    ) -> set[ObjectKey]:
        """Delete what left Git (when allowed); return the keys to keep in the inventory for a retry."""
        policy = self._policy(options)
        reserved = {key for key in previous.keys if reserved_reason(Target(key, None), policy)}
        for key in sorted(reserved - set(items)):
            # recorded before the daemon's namespace was reserved: never deleted, no longer ours
            result.changeset.add(
                ChangeSetEntry(key, Action.SKIPPED, message="not pruned: it belongs to the daemon itself")
            )
        previous_keys = previous.keys - reserved
        candidates = [key for key in previous_keys if key not in items]
        if not options.prune.enabled:
            return set(candidates)  # not pruned, so still owned: keep them in the inventory
        if not candidates:
            return set()
        live: dict[ObjectKey, Body | None] = {}
        for key in candidates:
            entry = previous.entries[key]
            try:
                live[key] = await self.client.get(entry.api_version, key.kind, key.namespace, key.name)
            except NoMatchError:
                live[key] = None
        plan = plan_prune(previous_keys, set(items), live, options.environment, options.prune)
        keep: set[ObjectKey] = set()
        for key, reason in sorted(plan.kept.items()):
            result.changeset.add(ChangeSetEntry(key, Action.SKIPPED, message=f"not pruned: {reason}"))
        if plan.blocked:
            result.prune_blocked = plan.blocked
            keep.update(plan.kept)
            progress(f"prune blocked: {plan.blocked}")
            return keep
        if dry_run:
            for key in plan.delete:
                result.changeset.add(
                    ChangeSetEntry(key, Action.DELETED, unified_diff(key, live[key], None), "would delete")
                )
            return keep
        for key in plan.delete:
            entry = previous.entries[key]
            body = live[key] or {}
            uid = str((body.get("metadata") or {}).get("uid") or "")
            try:
                await self.client.delete(entry.api_version, key.kind, key.namespace, key.name, uid=uid)
            except (NotFoundError, NoMatchError):
                pass
            except KubeError as exc:
                keep.add(key)
                result.changeset.add(
                    ChangeSetEntry(key, Action.FAILED, message=f"prune failed: {exc.api_message}")
                )
                continue
            result.changeset.add(ChangeSetEntry(key, Action.DELETED, unified_diff(key, body, None)))
        if plan.delete:
            progress(f"pruned {len(plan.delete) - len(keep)} objects")
        return keep

    # -- drift -----------------------------------------------------------------------------------
    def _on_live_event(self, event: str, key: ObjectKey, body: Body) -> None:
        env = self._owner.get(key)
        if env is None:
            return
        manifest = self._desired.get(env, {}).get(key)
        if manifest is None:
            return
        if event != "DELETED" and not drift(manifest.body, body):
            return
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        if _marked_for_other(body, env):
            return  # another environment adopted it (reconciler.dev/adopt): not ours to correct
        if key in self._pending_corrections:
            return
        self._pending_corrections.add(key)
        task = asyncio.create_task(self._correct(env, key, event), name=f"correct-{key}")
        self._correction_tasks.add(task)
        task.add_done_callback(self._correction_tasks.discard)

    async def _correct(self, env: str, key: ObjectKey, event: str) -> None:
        # a drift correction is a small reconcile of its own: its log lines carry the same context
        with structlog.contextvars.bound_contextvars(
            environment=env,
            revision=self._revisions.get(env, ""),
            reconcile_id=f"{env}-drift-{secrets.token_hex(4)}",
        ):
            await self._correct_one(env, key, event)

    async def _correct_one(self, env: str, key: ObjectKey, event: str) -> None:
        try:
            async with self.lock(env):
                manifest = self._desired.get(env, {}).get(key)
                if manifest is None:
                    return
                live = self.cache.get(key) if self.cache is not None else None
                if event != "DELETED" and live is not None and not drift(manifest.body, live):
                    return
                if live is not None and _marked_for_other(live, env):
                    log.info("drift not corrected: another environment adopted the object", object=str(key))
                    return
                if not self.guard.allow(key):
                    managers = other_managers(live or {}, FIELD_MANAGER)
                    entry = ChangeSetEntry(
                        key,
                        Action.SKIPPED,
                        message="drift not corrected: fighting with "
                        + (", ".join(managers[:3]) if managers else "another writer")
                        + f" ({self.guard.max_corrections} corrections in {self.guard.window:.0f} s)",
                    )
                    self._record_drift(env, entry)
                    return
                changed = drift(manifest.body, live) if live is not None else ["(object deleted)"]
                await self.client.apply(manifest.body, self._apply_options(manifest))
                entry = ChangeSetEntry(
                    key,
                    Action.CREATED if live is None else Action.CONFIGURED,
                    message="drift corrected: " + ", ".join(changed[:5]),
                )
                self._record_drift(env, entry)
        except KubeError as exc:
            message = scrub(f"drift correction failed: {exc}", self._secret_values.get(env, frozenset()))
            self._record_drift(env, ChangeSetEntry(key, Action.FAILED, message=message))
        finally:
            self._pending_corrections.discard(key)

    def _record_drift(self, env: str, entry: ChangeSetEntry) -> None:
        self.drift_events.append(entry)
        log.info(
            "drift", environment=env, object=str(entry.key), action=entry.action.value, message=entry.message
        )
        if self.on_drift is not None:
            self.on_drift(env, entry)

    async def close(self) -> None:
        """Wait for in-flight drift corrections."""
        for task in list(self._correction_tasks):
            task.cancel()
        await asyncio.gather(*self._correction_tasks, return_exceptions=True)


__all__ = [
    "STAGES",
    "Engine",
    "SyncFailedError",
    "SyncOptions",
    "SyncResult",
    "mark_owned",
    "prepare",
]
