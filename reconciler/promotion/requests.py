"""Creating promotions: requests (staging's values towards production) and rollbacks (a target's
earlier values), each checked against replays and the target overlay before anyone approves it, and
created Pending; creating one supersedes the older open promotions of its pipeline."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.objects import Body
from reconciler.promotion import edit
from reconciler.promotion.audit import Auditor
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.overlay import Overlays
from reconciler.promotion.policy import Pipeline, PromotionSettings
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.store import PromotionStore, new_name
from reconciler.promotion.superseding import supersede
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import EnvView, Host, PromotionError, succeeded
from reconciler.server.app import DeliveryLog


def _unified(before: str, after: str, path: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(lines)


class Requests:
    """The request and rollback operations of the promotions API (and of automatic requests)."""

    def __init__(
        self,
        settings: PromotionSettings,
        store: PromotionStore,
        writer: GitWriter,
        host: Host,
        *,
        overlays: Overlays,
        status: StatusWriter,
        auditor: Auditor,
        wake: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.host = host
        self.overlays = overlays
        self.status = status
        self.auditor = auditor
        self.wake = wake
        # recently used nonces (bounded), besides the ones stored in each Promotion
        self._nonces = DeliveryLog(size=8192)

    def _refuse_replay(self, nonce: str, promotions: list[Body]) -> None:
        """Refuse a request whose nonce this replica saw recently or any stored promotion holds."""
        stored = any(
            (body.get("spec") or {}).get("requestNonce") == nonce
            or nonce in ((body.get("status") or {}).get("nonces") or [])
            for body in promotions
        )
        if self._nonces.seen(nonce) or stored:
            raise PromotionError(409, "this request was already received (replayed nonce)")

    def _candidate(self, view: EnvView | None, payload: Mapping[str, Any]) -> str:
        """The revision a request promotes: the one asked for, else what the source runs."""
        # a follower replica does not sync: it knows the fetched head, not what the source runs
        current = view.revision if view is not None and view.revision else self.host.head_revision()
        revision = str(payload.get("revision") or current)
        if not revision:
            raise PromotionError(409, "the repository has not been fetched yet: nothing to promote")
        if len(revision) != 40 or not self.writer.is_ancestor(revision, revision):
            raise PromotionError(
                404, f"revision {revision[:40]!r} is not a full commit id the repository holds"
            )
        return revision

    async def request(self, call: SignedCall, *, automatic: bool = False) -> Body:
        """Create a promotion from ``payload['from']`` to ``payload['to']`` (optionally at a revision)."""
        payload = call.payload
        source, target = str(payload.get("from", "")), str(payload.get("to", ""))
        pipeline = self.settings.pipeline(source, target)
        if pipeline is None:
            raise PromotionError(404, f"no promotion pipeline from {source!r} to {target!r}")
        promotions = await self.store.list()
        if not automatic:
            self._refuse_replay(call.nonce, promotions)
        view = self.host.environment_view(source)
        revision = self._candidate(view, payload)
        if view is not None and view.input_key and revision == view.revision:
            input_key = view.input_key
        else:
            input_key = await self.host.input_key_at(source, revision)
        source_env = self.overlays.env_path(source)
        images, files = await asyncio.to_thread(self.overlays.promoted_values, pipeline, source_env, revision)
        await asyncio.to_thread(self.overlays.preflight, target, images, False)
        done = succeeded(promotions, pipeline, "Promotion")
        base = str(done[-1]["spec"].get("sourceRevision", "")) if done else ""
        authors = await asyncio.to_thread(self.writer.authors, source_env, base, revision)
        spec = {
            "pipeline": pipeline.name,
            "from": source,
            "to": target,
            "type": "Promotion",
            "sourceRevision": revision,
            "sourceInputKey": input_key,
            "requestedBy": call.identity,
            "requestNonce": call.nonce,
            "requiredApprovals": pipeline.approvals,
            "images": images,
            "files": files,
            "authors": authors,
        }
        return await self.create(pipeline, spec, call, automatic=automatic)

    async def preview(self, call: SignedCall) -> dict[str, Any]:
        """What a request would commit, without creating anything: the values and the exact diff of the
        target overlay at the branch head (``dry_run: true`` in a signed request)."""
        payload = call.payload
        source, target = str(payload.get("from", "")), str(payload.get("to", ""))
        pipeline = self.settings.pipeline(source, target)
        if pipeline is None:
            raise PromotionError(404, f"no promotion pipeline from {source!r} to {target!r}")
        revision = self._candidate(self.host.environment_view(source), payload)
        source_env, target_env = self.overlays.env_path(source), self.overlays.env_path(target)
        images, files = await asyncio.to_thread(self.overlays.promoted_values, pipeline, source_env, revision)
        head = self.host.head_revision()
        diff = await asyncio.to_thread(
            self._preview_diff, target_env, source_env, images, files, (revision, head)
        )
        return {
            "dryRun": True,
            "from": source,
            "to": target,
            "revision": revision,
            "images": images,
            "files": files,
            "diff": diff,
        }

    def _preview_diff(
        self,
        target_env: str,
        source_env: str,
        images: list[dict[str, str]],
        files: list[str],
        revisions: tuple[str, str],
    ) -> str:
        """The unified diff the commit would make to the target overlay at the branch head."""
        revision, head = revisions
        chunks: list[str] = []
        text = self.overlays.kustomization_text(target_env, head) if images else None
        if text is not None:
            path = f"{target_env}/kustomization.yaml"
            try:
                result, _, _ = edit.apply(text, images, path)
            except edit.EditError as exc:
                raise PromotionError(409, f"the target cannot take these values: {exc}") from None
            chunks.append(_unified(text, result, path))
        for file in files:
            old = self.writer.show(head, f"{target_env}/{file}") or ""
            new = self.writer.show(revision, f"{source_env}/{file}") or ""
            chunks.append(_unified(old, new, f"{target_env}/{file}"))
        return "".join(chunks)

    async def rollback(self, call: SignedCall) -> Body:
        """Create a rollback of ``payload['to']`` to an earlier promotion's values or a revision."""
        payload = call.payload
        target = str(payload.get("to", ""))
        pipeline = self.settings.pipeline_to(target)
        if pipeline is None:
            raise PromotionError(404, f"no promotion pipeline leads to {target!r}")
        promotions = await self.store.list()
        self._refuse_replay(call.nonce, promotions)
        view = self.host.environment_view(target)
        head = view.revision if view is not None and view.revision else self.host.head_revision()
        if view is None or not head:
            raise PromotionError(409, "the repository has not been fetched yet")
        wanted = str(payload.get("target") or "")
        images, what = await self._restored_images(pipeline, promotions, target, head, wanted)
        if not images:
            raise PromotionError(409, f"nothing to restore: {what} has no images")
        await asyncio.to_thread(self.overlays.preflight, target, images, True)
        spec = {
            "pipeline": pipeline.name,
            "from": target,
            "to": target,
            "type": "Rollback",
            "sourceRevision": head,
            "sourceInputKey": view.input_key,
            "requestedBy": call.identity,
            "requestNonce": call.nonce,
            "rollbackOf": wanted or what,
            "requiredApprovals": pipeline.rollback.approvals,
            "images": images,
            "files": [],
            "authors": [],
        }
        return await self.create(pipeline, spec, call, automatic=False)

    async def _restored_images(
        self, pipeline: Pipeline, promotions: list[Body], target: str, head: str, wanted: str
    ) -> tuple[list[dict[str, str]], str]:
        """The images a rollback restores, and what they are: the values a named promotion promoted,
        the images at a named revision, or (by default) those before the last succeeded promotion."""
        if wanted and any(p["metadata"]["name"] == wanted for p in promotions):
            chosen = next(p for p in promotions if p["metadata"]["name"] == wanted)
            return list((chosen.get("spec") or {}).get("images") or []), f"the values promoted by {wanted}"
        if wanted:
            if not self.writer.is_ancestor(wanted, head):
                raise PromotionError(
                    404, f"{wanted!r} is neither a promotion nor a revision of {target}'s history"
                )
            text = await asyncio.to_thread(
                self.overlays.kustomization_text, self.overlays.env_path(target), wanted
            )
            if text is None:
                raise PromotionError(404, f"{target} has no kustomization at {wanted[:12]}")
            return edit.read_images(text), f"the images at {wanted[:12]}"
        done = [p for p in succeeded(promotions, pipeline) if p["status"].get("previousImages")]
        if not done:
            raise PromotionError(409, f"no succeeded promotion into {target} to roll back")
        return list(done[-1]["status"]["previousImages"]), f"the images before {done[-1]['metadata']['name']}"

    async def create(
        self, pipeline: Pipeline, spec: dict[str, Any], call: SignedCall, *, automatic: bool
    ) -> Body:
        """Create the Promotion (Pending), audit the request, and supersede the older open ones;
        answers with the promotion as it is then."""
        name = new_name(pipeline.name)
        required = int(spec["requiredApprovals"])
        status = {
            "phase": "Pending",
            "message": f"waiting for {required} approval(s)",
            "shortRevision": str(spec["sourceRevision"])[:12],
            "approvalSummary": f"0/{required}",
            "approvals": [],
            "rejections": [],
            "nonces": [] if automatic else [call.nonce],
        }
        body = await self.store.create(spec, status, name)
        kind = "rollback" if spec["type"] == "Rollback" else "promotion"
        await self.auditor.audit(
            body,
            "Requested",
            f"{kind} {spec['from']} → {spec['to']} at {str(spec['sourceRevision'])[:12]} requested by "
            f"{call.identity}" + (" (automatic)" if automatic else ""),
            identity=call.identity,
        )
        await supersede(self.status, await self.store.list(), pipeline.name)
        self.wake()
        # as it is now: Superseded when a request newer than this one was seen (by this replica or
        # another); a newer one not created yet will supersede it later
        return await self.store.get(name) or body
