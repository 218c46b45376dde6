"""Drift correction: what each environment last applied, and putting it back as soon as a watch event
shows an object changed or deleted by someone else, without fighting another controller for ever.

A correction is a small reconcile of its own: under the environment's ``permit`` (with sharding, this
replica owns the environment and holds its claim; elsewhere it is skipped, the owner makes it) and
lock, only for objects still desired and still ours (an object another environment adopted is left to
it), at most ``FightGuard.max_corrections`` times per window before it is reported as a fight. Every
outcome is a ChangeSet entry given to ``on_drift`` (metrics, Events), and the last ``RECENT`` are kept
for reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager

import structlog

from reconciler.drift import FightGuard, other_managers
from reconciler.kube import fencing
from reconciler.kube.cache import LiveCache
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.objects import FIELD_MANAGER, Action, Body, ChangeSetEntry, Manifest, ObjectKey
from reconciler.plan.compare import drift
from reconciler.plan.diff import scrub
from reconciler.sync.planned import marked_for_other
from reconciler.sync.validate import apply_options

log = structlog.get_logger(__name__)
RECENT = 1000

Locks = Callable[[str], asyncio.Lock]
DriftListener = Callable[[str, ChangeSetEntry], None]
# the right to write to an environment for the block (raises ``NotPermitted`` when this replica has not)
Permit = Callable[[str], AbstractAsyncContextManager[object]]


class NotPermittedError(Exception):
    """This replica may not write to the environment now (another replica owns it or holds its claim)."""


def always_permitted(_environment: str) -> AbstractAsyncContextManager[object]:
    """The permit of a daemon without sharding: every environment is its own."""
    return contextlib.nullcontext()


class DriftCorrector:
    """Reverts drift of the objects each environment last applied."""

    def __init__(self, client: KubeClient, cache: LiveCache | None, locks: Locks, guard: FightGuard) -> None:
        self.client = client
        self.cache = cache
        self.lock = locks
        self.guard = guard
        self.recent: deque[ChangeSetEntry] = deque(maxlen=RECENT)
        self.on_drift: DriftListener | None = None
        self.permit: Permit = always_permitted
        self._desired: dict[str, dict[ObjectKey, Manifest]] = {}
        self._revisions: dict[str, str] = {}
        self._owner: dict[ObjectKey, str] = {}
        self._secrets: dict[str, frozenset[str]] = {}
        self._pending: set[ObjectKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        if cache is not None:
            cache.subscribe(self.on_live_event)

    def remember(self, environment: str, manifests: Iterable[Manifest], revision: str) -> None:
        """What ``environment`` now wants: called before a sync's first write, so drift correction
        never reverts a newer object to an older revision when that sync fails or is cancelled."""
        desired = {m.key: m for m in manifests}
        for key in self._desired.get(environment, {}).keys() - desired.keys():
            if self._owner.get(key) == environment:
                del self._owner[key]
        self._desired[environment] = desired
        self._revisions[environment] = revision
        for key in desired:
            self._owner[key] = environment

    def forget(self, environment: str) -> None:
        """Drop what ``environment`` wanted (it moved to another replica): no correction from this
        replica's older knowledge if it ever comes back before its next sync."""
        for key in self._desired.pop(environment, {}):
            if self._owner.get(key) == environment:
                del self._owner[key]
        self._revisions.pop(environment, None)
        self._secrets.pop(environment, None)

    def hide(self, environment: str, values: frozenset[str]) -> None:
        """The Secret values of ``environment``'s render, scrubbed from correction messages."""
        self._secrets[environment] = values

    def on_live_event(self, event: str, key: ObjectKey, body: Body) -> None:
        """A watch event: schedule a correction when a desired object drifted or was deleted."""
        env = self._owner.get(key)
        manifest = self._desired.get(env, {}).get(key) if env is not None else None
        if env is None or manifest is None:
            return
        if event != "DELETED" and not drift(manifest.body, body):
            return
        if (body.get("metadata") or {}).get("deletionTimestamp") or marked_for_other(body, env):
            return  # being deleted, or another environment adopted it (reconciler.dev/adopt)
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.create_task(
            self._correct(env, key, event), name=f"correct-{key}", context=fencing.unfenced()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _correct(self, env: str, key: ObjectKey, event: str) -> None:
        # a drift correction is a small reconcile of its own: its log lines carry the same context
        with structlog.contextvars.bound_contextvars(
            environment=env,
            revision=self._revisions.get(env, ""),
            reconcile_id=f"{env}-drift-{secrets.token_hex(4)}",
        ):
            try:
                async with self.permit(env), self.lock(env):
                    await self._correct_one(env, key, event)
            except NotPermittedError as exc:
                log.debug("drift not corrected by this replica", object=str(key), reason=str(exc))
            except KubeError as exc:
                message = scrub(f"drift correction failed: {exc}", self._secrets.get(env, frozenset()))
                self._record(env, ChangeSetEntry(key, Action.FAILED, message=message))
            finally:
                self._pending.discard(key)

    async def _correct_one(self, env: str, key: ObjectKey, event: str) -> None:
        manifest = self._desired.get(env, {}).get(key)
        if manifest is None:
            return
        live = self.cache.get(key) if self.cache is not None else None
        if event != "DELETED" and live is not None and not drift(manifest.body, live):
            return
        if live is not None and marked_for_other(live, env):
            log.info("drift not corrected: another environment adopted the object", object=str(key))
            return
        if not self.guard.allow(key):
            managers = other_managers(live or {}, FIELD_MANAGER)
            who = ", ".join(managers[:3]) if managers else "another writer"
            message = (
                f"drift not corrected: fighting with {who} "
                f"({self.guard.max_corrections} corrections in {self.guard.window:.0f} s)"
            )
            self._record(env, ChangeSetEntry(key, Action.SKIPPED, message=message))
            return
        changed = drift(manifest.body, live) if live is not None else ["(object deleted)"]
        await self.client.apply(manifest.body, apply_options(manifest))
        action = Action.CREATED if live is None else Action.CONFIGURED
        self._record(env, ChangeSetEntry(key, action, message="drift corrected: " + ", ".join(changed[:5])))

    def _record(self, env: str, entry: ChangeSetEntry) -> None:
        self.recent.append(entry)
        log.info(
            "drift", environment=env, object=str(entry.key), action=entry.action.value, message=entry.message
        )
        if self.on_drift is not None:
            self.on_drift(env, entry)

    async def close(self) -> None:
        """Cancel in-flight corrections and stop listening."""
        if self.cache is not None:
            self.cache.unsubscribe(self.on_live_event)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
