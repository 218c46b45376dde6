"""The apply stage: server-side apply of what needs a write, one ordered stage at a time (objects of a
stage concurrently, bounded), with the HPA hand-over of ``spec.replicas``, recreation of objects whose
immutable fields changed (when their manifest allows it), and a ChangeSet entry per object."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from reconciler import retry
from reconciler.kube.client import ApplyOptions, KubeClient
from reconciler.kube.errors import ConflictError, ImmutableFieldError, KubeError
from reconciler.objects import (
    FIELD_MANAGER,
    FORCE_CONFLICTS_ANNOTATION,
    RECREATE_ANNOTATION,
    Action,
    Body,
    ChangeSetEntry,
    Manifest,
    ObjectKey,
)
from reconciler.plan.diff import unified_diff
from reconciler.plan.hpa import owns_replicas
from reconciler.plan.ordering import Stage
from reconciler.sync.outcome import Reason, SyncFailedError, SyncResult, failure_message
from reconciler.sync.planned import Plan, PlannedObject, version_of
from reconciler.sync.validate import IMMUTABLE_ADVICE, apply_options

HANDOFF_MANAGER = "reconciler-replicas-handoff"
RECREATE_TIMEOUT = 60.0


class Applier:
    """Writes the objects of one stage."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def apply_stage(
        self,
        stage: Stage,
        objects: Sequence[PlannedObject],
        concurrency: int,
        result: SyncResult,
        applied: dict[ObjectKey, str],
        diffs: bool = True,
    ) -> list[PlannedObject]:
        """Apply every object of ``stage`` that needs a write, recording each one written in ``applied``
        (key: manifest hash) as it lands; the ones written. Raises ``SyncFailedError`` (ApplyFailed)
        naming every failure once the stage's requests are done."""
        to_write = [p for p in objects if p.writes]
        semaphore = asyncio.Semaphore(concurrency)
        failures: list[tuple[ObjectKey, str]] = []
        written: list[PlannedObject] = []

        async def one(planned: PlannedObject) -> None:
            async with semaphore:
                try:
                    entry = await self.apply_one(planned, diffs)
                except KubeError as exc:
                    failures.append((planned.key, exc.api_message))
                    result.changeset.add(ChangeSetEntry(planned.key, Action.FAILED, message=exc.api_message))
                    return
                written.append(planned)
                applied[planned.key] = planned.hash
                result.changeset.add(entry)

        await asyncio.gather(*(one(p) for p in to_write))
        if failures:
            raise SyncFailedError(
                Reason.APPLY_FAILED,
                failure_message(sorted(failures), "failed to apply").replace(
                    ", nothing was written", f" in stage {stage.name}"
                ),
            )
        if stage.name == "cluster-definitions":
            self._forget_new_kinds(written)
        return written

    def _forget_new_kinds(self, written: Sequence[PlannedObject]) -> None:
        """Drop cached discovery of the group-versions the CRDs just written serve."""
        for planned in written:
            if planned.key.kind == "CustomResourceDefinition":
                spec = planned.manifest.body.get("spec") or {}
                for version in spec.get("versions") or []:
                    self.client.forget(f"{spec.get('group')}/{version.get('name')}")

    async def apply_one(self, planned: PlannedObject, diffs: bool = True) -> ChangeSetEntry:
        """Apply one object (recreating it when that is its plan); its ChangeSet entry."""
        manifest, key = planned.manifest, planned.key
        if planned.autoscaled and planned.live is not None:
            await self.hand_off_replicas(manifest, planned.live, planned.initial_replicas or 0)
        action = Action.CREATED if planned.live is None else Action.CONFIGURED
        message = ""
        try:
            if planned.plan is Plan.RECREATE:
                raise ImmutableFieldError(str(key), "validation found an immutable field change", 422)
            body = manifest.body
            if planned.live is None and planned.initial_replicas is not None:
                # created at the size the autoscaler will keep it at; handed over on the next apply
                body = {**body, "spec": {**(body.get("spec") or {}), "replicas": planned.initial_replicas}}
            applied = await self.client.apply(body, apply_options(manifest))
        except ImmutableFieldError as exc:
            if manifest.annotation(RECREATE_ANNOTATION).lower() != "true":
                raise ImmutableFieldError(
                    str(key), exc.api_message + IMMUTABLE_ADVICE, exc.status, exc.reason
                ) from None
            await self.recreate(manifest)
            applied = await self.client.apply(manifest.body, apply_options(manifest))
            action, message = Action.CREATED, "recreated: an immutable field changed"
        except ConflictError as exc:
            raise ConflictError(
                str(key),
                f"{exc.api_message} — another field manager owns these fields and "
                f'{FORCE_CONFLICTS_ANNOTATION} is "false"',
                exc.status,
                exc.reason,
            ) from None
        planned.applied_version = version_of(applied)
        diff = unified_diff(key, planned.live, planned.dry_run or applied) if diffs else ""
        return ChangeSetEntry(key, action, diff, message)

    async def hand_off_replicas(self, manifest: Manifest, live: Body, minimum: int = 0) -> None:
        """Keep the live replica count when we stop declaring it (an HPA now scales the workload), at
        least the HPA's minimum (``minimum``).

        Without this, dropping ``spec.replicas`` from our apply would remove the field (we were its only
        owner) and the workload would scale down to its default of one replica. And a workload handed
        over at fewer replicas than its HPA's minimum (a blue/green slot at 0) would look healthy until
        the HPA scaled it: the next wave (the Service switching to it) must not start before that.
        """
        if not owns_replicas(live, FIELD_MANAGER):
            return
        replicas = (live.get("spec") or {}).get("replicas")
        if replicas is None:
            return
        replicas = max(int(replicas), minimum)
        key = manifest.key
        body = {
            "apiVersion": manifest.api_version,
            "kind": key.kind,
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": {"replicas": replicas},
        }
        await self.client.apply(body, ApplyOptions(field_manager=HANDOFF_MANAGER, force=True))

    async def recreate(self, manifest: Manifest, timeout: float = RECREATE_TIMEOUT) -> None:
        """Delete (foreground) and wait until the object is gone, so it can be created again."""
        key = manifest.key
        await self.client.delete(
            manifest.api_version, key.kind, key.namespace, key.name, propagation="Foreground"
        )

        async def gone() -> None:
            if await self.client.get(manifest.api_version, key.kind, key.namespace, key.name) is not None:
                raise retry.NotYet

        try:
            await retry.until(gone, timeout)
        except retry.NotYet:
            raise KubeError(
                str(key), f"still present {timeout:.0f} s after deleting it for recreation"
            ) from None
