"""The validate stage: a server-side dry-run of every object that may change, before the first write.

Objects whose namespace this sync creates are dry-run in a stand-in namespace (``default``): schema,
defaulting and admission all run, only namespace-specific policy does not. Custom resources whose CRD
arrives in the same sync are dry-run once the CRD and Namespace stage is established, before any other
write. A dry-run answer equal to the live object means the object needs no write after all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

from reconciler import retry
from reconciler.kube.client import ApplyOptions, KubeClient
from reconciler.kube.errors import ImmutableFieldError, KubeError, NoMatchError
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
from reconciler.sync.outcome import (
    Reason,
    SyncFailedError,
    SyncOptions,
    SyncResult,
    failure_message,
)
from reconciler.sync.planned import Plan, Planned, PlannedObject, comparable

IMMUTABLE_ADVICE = (
    f' (the object must be recreated to change this field; annotate it {RECREATE_ANNOTATION}: "true" '
    "to let reconciler delete and recreate it)"
)
STAND_IN_NAMESPACE = "default"
SERVED_TIMEOUT = 15.0


def apply_options(manifest: Manifest, *, dry_run: bool = False) -> ApplyOptions:
    """How ``manifest`` is applied: our field manager, forcing conflicts unless it says otherwise."""
    force = manifest.annotation(FORCE_CONFLICTS_ANNOTATION, "true").lower() != "false"
    return ApplyOptions(field_manager=FIELD_MANAGER, force=force, dry_run=dry_run)


class Validator:
    """Dry-runs objects and settles what really needs a write."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def validate(
        self, objects: Planned, new_namespaces: set[str], options: SyncOptions, result: SyncResult
    ) -> list[PlannedObject]:
        """Dry-run everything that may change now; the objects that will be written. Raises
        ``SyncFailedError`` (ValidationFailed) naming every refused object: nothing is written."""
        for planned in objects.values():
            if planned.plan is Plan.WRITE and planned.key.namespace in new_namespaces:
                planned.plan = Plan.WRITE_IN_NEW_NAMESPACE
        now = [p for p in objects.values() if p.plan is Plan.WRITE]
        stand_ins = [p for p in objects.values() if p.plan is Plan.WRITE_IN_NEW_NAMESPACE]
        direct, stood_in = await asyncio.gather(
            self.dry_run_all(now, options.concurrency),
            self.dry_run_all(stand_ins, options.concurrency, stand_in=True),
        )
        failures = sorted(direct + stood_in)
        if failures:
            raise SyncFailedError(
                Reason.VALIDATION_FAILED, failure_message(failures, "refused by the API server")
            )
        for planned in now:
            settle(planned, result)
        return [p for p in objects.values() if p.writes]

    async def validate_after_crds(
        self, pending: Sequence[PlannedObject], options: SyncOptions, result: SyncResult
    ) -> None:
        """Dry-run the objects that needed the cluster-definitions stage, before any other write."""
        for planned in pending:
            self.client.forget(planned.manifest.api_version)
            planned.plan = Plan.WRITE
        await self._served(pending)
        failures = await self.dry_run_all(pending, options.concurrency)
        if failures:
            raise SyncFailedError(
                Reason.VALIDATION_FAILED,
                failure_message(failures, "refused once their namespaces and CRDs existed").replace(
                    "nothing was written", "only the CRD and Namespace stage was written"
                ),
            )
        for planned in pending:
            settle(planned, result)

    async def _served(self, pending: Sequence[PlannedObject], timeout: float = SERVED_TIMEOUT) -> None:
        """Wait (bounded) until discovery serves every kind of ``pending``: an Established CRD can take a
        moment to appear there; after the deadline the dry-run says which kind is missing."""
        kinds = {(p.manifest.api_version, p.key.kind) for p in pending}

        async def served() -> None:
            for api_version, kind in list(kinds):
                try:
                    await self.client.resource(api_version, kind, refresh=True)
                    kinds.discard((api_version, kind))
                except NoMatchError:
                    raise retry.NotYet from None

        with contextlib.suppress(retry.NotYet):
            await retry.until(served, timeout)

    async def dry_run_all(
        self, objects: Sequence[PlannedObject], concurrency: int, *, stand_in: bool = False
    ) -> list[tuple[ObjectKey, str]]:
        """Dry-run every object (with ``stand_in``: in the stand-in namespace); the refusals.

        Objects whose stand-in requests are identical (the same app in many new namespaces: only the
        namespace differed) are dry-run once, and that answer stands for each of them: a dry-run writes
        nothing, so the same request gets the same verdict."""
        semaphore = asyncio.Semaphore(concurrency)
        failures: list[tuple[ObjectKey, str]] = []

        async def one(group: Sequence[PlannedObject], body: Body) -> None:
            first = group[0]
            async with semaphore:
                try:
                    answer = await self.client.apply(body, apply_options(first.manifest, dry_run=True))
                except ImmutableFieldError as exc:
                    for planned in group:
                        if planned.manifest.annotation(RECREATE_ANNOTATION).lower() == "true":
                            planned.plan = Plan.RECREATE
                        else:
                            failures.append((planned.key, exc.api_message + IMMUTABLE_ADVICE))
                    return
                except KubeError as exc:
                    failures.extend((planned.key, exc.api_message) for planned in group)
                    return
                if not stand_in:
                    first.dry_run = answer

        if stand_in:
            groups: dict[str, tuple[list[PlannedObject], Body]] = {}
            for planned in objects:
                body = planned.manifest.body
                body = {**body, "metadata": {**body["metadata"], "namespace": STAND_IN_NAMESPACE}}
                groups.setdefault(json.dumps(body, sort_keys=True), ([], body))[0].append(planned)
            requests = [one(group, body) for group, body in groups.values()]
        else:
            requests = [one([planned], planned.manifest.body) for planned in objects]
        await asyncio.gather(*requests)
        return sorted(failures)


def settle(planned: PlannedObject, result: SyncResult) -> None:
    """Decide from the dry-run answer whether the object really needs a write."""
    if planned.dry_run is None or planned.plan is Plan.RECREATE:
        return
    if planned.live is not None and comparable(planned.dry_run) == comparable(planned.live):
        planned.plan = Plan.UNCHANGED
        result.changeset.add(ChangeSetEntry(planned.key, Action.UNCHANGED))
