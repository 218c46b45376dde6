"""The fetch/revision flow: move the mirror to the branch head, gate it on ``repository.verify``, find
the environments whose render inputs changed and queue their syncs (cancelling superseded ones), and
keep looking for the commits webhooks announced until the mirror holds them (or they are given up)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.envstatus import next_conditions, now_rfc3339
from reconciler.events import EventNote
from reconciler.metrics import Metrics
from reconciler.render import Renderer, RenderError
from reconciler.source import GitError, GitSource
from reconciler.source.gate import UNVERIFIED, CommitGate
from reconciler.workqueue import WorkQueue

from .environment import EnvironmentState, render_options
from .reporting import Reporter

log = structlog.get_logger("reconciler.daemon")
FETCH = "fetch"
# how many fetches look for a commit a webhook announced before it is given up (0.2 s doubling to 2 s
# between them: about 9 s, long enough for a Git server whose replicas lag behind its webhooks)
WANTED_ATTEMPTS = 8
# while Git fails, a commit a webhook announced is looked for this often, for this long after the webhook
WANTED_RETRY = 0.5
WANTED_PATIENCE = 120.0
ZERO_SHA = frozenset({"0" * 40, "0" * 64})


@dataclass
class Head:
    """What the daemon fetched last: the verified revision, its snapshot, and how Git is doing."""

    revision: str = ""
    snapshot: Path | None = None
    fetched_once: bool = False
    stale_reason: str = ""
    last_fetch_success: float = 0.0


@dataclass
class Wanted:
    """A commit a webhook announced, until the mirror holds it."""

    since: float  # monotonic time of the first webhook naming it
    misses: int = 0  # successful fetches that did not bring it


class Fetcher:
    """The work item ``fetch`` and the commits webhooks wait for."""

    def __init__(
        self,
        source: GitSource,
        gate: CommitGate,
        renderer: Renderer,
        kustomize: Path,
        environments: dict[str, EnvironmentState],
        metrics: Metrics,
        queue: WorkQueue,
        leading: asyncio.Event,
        reporter: Reporter,
    ) -> None:
        self.source = source
        self.gate = gate
        self.renderer = renderer
        self.kustomize = kustomize
        self.environments = environments
        self.metrics = metrics
        self.queue = queue
        self.leading = leading
        self.reporter = reporter
        self.head = Head()
        self.requested: dict[str, Wanted] = {}  # commits webhooks announced, until fetched
        self._refused_head = ""  # the last head refused by the gate (counted once)

    def want(self, sha: str) -> None:
        """A webhook (or a follower's nudge) announced ``sha``: look for it until the mirror holds it."""
        self.requested.setdefault(sha, Wanted(time.monotonic()))

    async def fetch(self) -> None:
        """Fetch the branch head; when it is verified, make it the revision and queue what it changed."""
        started = time.monotonic()
        try:
            sha = await self.source.fetch()
            snapshot = await self.source.snapshot(sha)
        except GitError as exc:
            self.metrics.fetch_failed()
            self.head.stale_reason = str(exc)
            log.warning(
                "git fetch failed; keeping the last good revision",
                error=str(exc),
                revision=self.head.revision,
            )
            now = time.monotonic()
            if any(now - wanted.since < WANTED_PATIENCE for wanted in self.requested.values()):
                # webhooks wait for a commit: look again soon (an earlier timer wins over the backoff's)
                self.queue.add_after(FETCH, WANTED_RETRY)
            raise
        self.metrics.fetched(time.monotonic() - started)
        self.head.fetched_once = True
        self.head.stale_reason = ""
        self.head.last_fetch_success = time.time()
        await self._look_for_wanted(sha)
        if not await self._verified(sha):
            return
        changed_revision = sha != self.head.revision
        previous_revision = self.head.revision
        self.head.revision, self.head.snapshot = sha, snapshot
        if changed_revision:
            log.info("fetched", revision=sha[:12], seconds=round(time.monotonic() - started, 3))
        if not self.leading.is_set():
            return
        keys = await asyncio.to_thread(self._input_keys, snapshot, sha, previous_revision)
        self._queue_changed(sha, keys)

    def _queue_changed(self, sha: str, keys: dict[str, str]) -> None:
        """Queue a sync of every environment whose inputs ``sha`` changed (or that is not Ready), and
        say that the others are applied at ``sha`` as they are."""
        moved: list[str] = []
        for name, state in self.environments.items():
            key = keys[name]
            ready = state.result is not None and state.result.ok
            if key != state.input_key or not ready:
                self.queue.add(f"env:{name}")
                # a sync of older inputs (maybe waiting for their health) must not hold the new ones back:
                # cancel it (between API calls; the inventory is never half written) and run again at
                # once, as Flux's CancelHealthCheckOnNewRevision does
                if state.syncing_key not in ("", key) and self.queue.cancel(f"env:{name}"):
                    log.info("sync superseded by a new revision", environment=name, revision=sha[:12])
            else:
                state.revision = sha
                if state.result is not None and state.result.synced and state.applied_revision != sha:
                    # the same render inputs at a new commit: applied as it is, and said so
                    state.applied_revision = sha
                    self.metrics.applied_revision(name, sha)
                    state.conditions = next_conditions(
                        state.conditions,
                        state.result.condition,
                        state.result.reason,
                        state.message(),
                        now_rfc3339(),
                    )
                    moved.append(name)
        # one status write per environment the commit did not change: off the fetch's critical path, so
        # the next push is fetched at once however many environments there are
        self.reporter.report_later(moved)

    async def _verified(self, sha: str) -> bool:
        """True when ``sha`` may be synced (``repository.verify``). A refused head keeps the last verified
        revision: every environment is Stalled with reason UnverifiedCommit (an Event and the metric once
        per commit), and nothing is rendered, applied or pruned until a verified commit arrives."""
        verdict = await self.gate.check(sha)
        self.metrics.head_verified.set(1 if verdict.ok else 0)
        message = (
            "" if verdict.ok else f"{verdict.reason}; keeping revision {self.head.revision[:12] or '(none)'}"
        )
        if verdict.ok:
            self._refused_head = ""
        elif sha != self._refused_head:
            self._refused_head = sha
            self.metrics.unverified_commits.inc()
            log.warning(
                "fetched head is not verified; nothing is synced", commit=sha[:12], reason=verdict.reason
            )
        for name, state in self.environments.items():
            if state.unverified == message:
                continue
            state.unverified = message
            if not self.leading.is_set():
                continue
            if verdict.ok:
                await self.reporter.report(name, [])
                continue
            state.conditions = next_conditions(
                state.conditions, "Stalled", UNVERIFIED, message, now_rfc3339()
            )
            await self.reporter.report(name, [EventNote("Warning", UNVERIFIED, message)])
        return verdict.ok

    async def _look_for_wanted(self, head: str) -> None:
        """Forget the commits webhooks announced that the mirror now holds; fetch again soon for the
        others, but give each up after ``WANTED_ATTEMPTS`` fetches (a force push overtook it, or it was
        never on the branch): it must not keep the daemon fetching for ever."""
        for sha, wanted in list(self.requested.items()):
            if sha == head or await asyncio.to_thread(self.source.has_commit, sha):
                self.requested.pop(sha, None)
                continue
            wanted.misses += 1
            if wanted.misses >= WANTED_ATTEMPTS:
                self.requested.pop(sha, None)
                log.warning(
                    "a commit a webhook announced never arrived; given up (overtaken by a force push, or "
                    "not on the branch)",
                    commit=sha[:12],
                    fetches=wanted.misses,
                    head=head[:12],
                )
        if self.requested:
            fewest = min(wanted.misses for wanted in self.requested.values())
            self.queue.add_after(FETCH, min(2.0, 0.2 * 2 ** (fewest - 1)))

    def _input_keys(self, snapshot: Path, sha: str, previous: str = "") -> dict[str, str]:
        """Every environment's render-input key at a snapshot (blocking: one thread hop for all).

        Only environments whose input directories the commits since ``previous`` touched are hashed
        again (with 100 environments, a commit to one of them hashes one); the others keep their key.
        """
        changed = self.source.changed_paths(previous, sha) if previous and previous != sha else None
        touched = {path.rsplit("/", 1)[0] if "/" in path else "." for path in changed or ()}
        keys: dict[str, str] = {}
        for name, state in self.environments.items():
            if changed is not None and state.input_dirs is not None and not touched & state.input_dirs:
                keys[name] = state.latest_key
                continue
            try:
                keys[name], state.input_dirs = self.renderer.inputs_of(
                    snapshot, snapshot / state.config.path, render_options(self.kustomize, state.config)
                )
            except RenderError:
                keys[name] = f"error@{sha}"
                state.input_dirs = None
            state.latest_key = keys[name]
        return keys
