"""The commit step of a Promoting promotion: edit the target overlay (its ``images:`` entries, and the
pipeline's files copied from the source at the promoted revision), write the one commit with its
trailers (``Promoted-From``, ``Approved-By``, ``Promotion``) and record it in the status.

Exactly-once: the writer finds a commit already pushed with this promotion's trailer instead of
writing a second one (a leader that died after the push, or a new leader taking over)."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from reconciler.objects import Body
from reconciler.promotion import edit
from reconciler.promotion.approvals import excluded
from reconciler.promotion.audit import Auditor
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.overlay import Overlays, kustomization
from reconciler.promotion.policy import PromotionSettings, counted_approvals
from reconciler.promotion.store import now_iso
from reconciler.promotion.transitions import StatusWriter
from reconciler.promotion.views import Host
from reconciler.source.git import GitError

log = structlog.get_logger(__name__)
# Set to "promotion-after-push" (tests only) to SIGKILL the daemon right after a promotion commit is
# pushed and before it is recorded: the restart must find the commit instead of writing a second one.
FAULT_VARIABLE = "RECONCILER_FAULT_INJECTION"


@dataclass
class OverlayEdit:
    """The edit of the target overlay in the writer's work tree; remembers the images it replaced."""

    writer: GitWriter
    target_path: str
    source_path: str
    images: list[dict[str, str]]
    files: list[str]
    revision: str
    rollback: bool  # the target's own earlier values: set exactly
    previous: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, work: Path) -> list[str]:
        """Edit the overlay under ``work``; the paths changed."""
        changed: list[str] = []
        target = kustomization(self.target_path, lambda p: (work / p).is_file())
        if self.images and self._edit_images(work, target):
            changed.append(target)
        for file in self.files:
            if self._copy_file(work, file):
                changed.append(f"{self.target_path}/{file}")
        return changed

    def _edit_images(self, work: Path, target: str) -> bool:
        path = work / target
        # bytes, not text mode: a CRLF file stays CRLF (text mode would rewrite every line)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise edit.EditError(f"{target}: not UTF-8") from None
        result, current, _ = edit.apply(text, self.images, target, restore=self.rollback)
        self.previous[:] = current
        if result == text:
            return False
        path.write_bytes(result.encode("utf-8"))
        return True

    def _copy_file(self, work: Path, file: str) -> bool:
        content = self.writer.show(self.revision, f"{self.source_path}/{file}")
        if content is None:
            raise edit.EditError(f"{self.source_path}/{file} does not exist at {self.revision[:12]}")
        destination = work / self.target_path / file
        if destination.exists() and destination.read_text(encoding="utf-8") == content:
            return False
        destination.write_text(content, encoding="utf-8")
        return True


def commit_message(body: Body, name: str, approvers: list[str]) -> str:
    """The promotion commit's message, with its trailers."""
    spec = body.get("spec") or {}
    revision = str(spec.get("sourceRevision", ""))
    images = spec.get("images") or []
    kind = "Roll back" if spec.get("type") == "Rollback" else "Promote"
    what = ", ".join(
        f"{i['name']}:{i.get('newTag') or i.get('digest') or i.get('newName', '')}" for i in images
    ) or ", ".join(str(f) for f in spec.get("files") or [])
    lines = [
        f"{kind} {spec.get('from')}@{revision[:12]} to {spec.get('to')}: {what}"[:200],
        "",
        f"Requested by {spec.get('requestedBy')}.",
        "",
        f"Promoted-From: {spec.get('from')}@{revision}",
        *[f"Approved-By: {a}" for a in approvers],
        f"Promotion: {name}",
    ]
    return "\n".join(lines) + "\n"


class CommitStep:
    """Writes (or finds) the commit of a Promoting promotion and records it."""

    def __init__(
        self,
        settings: PromotionSettings,
        writer: GitWriter,
        host: Host,
        *,
        overlays: Overlays,
        status: StatusWriter,
        auditor: Auditor,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.host = host
        self.overlays = overlays
        self.status = status
        self.auditor = auditor

    def _edit(self, body: Body) -> OverlayEdit:
        spec = body.get("spec") or {}
        return OverlayEdit(
            writer=self.writer,
            target_path=self.overlays.env_path(str(spec.get("to"))),
            source_path=self.overlays.env_path(str(spec.get("from"))),
            images=[dict(i) for i in spec.get("images") or []],
            files=[str(f) for f in spec.get("files") or []],
            revision=str(spec.get("sourceRevision", "")),
            rollback=spec.get("type") == "Rollback",
        )

    async def write(self, body: Body, name: str) -> None:
        """Write the commit of promotion ``name``; a commit that cannot be written is retried on the
        next pass, an overlay that cannot be edited fails the promotion."""
        overlay_edit = self._edit(body)
        approved = counted_approvals(
            body["status"].get("approvals") or [], overlay_edit.revision, excluded(self.settings, body)
        )
        message = commit_message(body, name, approved)
        try:
            sha, created = await self.writer.commit_async(name, overlay_edit, message)
        except edit.EditError as exc:
            await self.status.finish(body, "Failed", f"the target overlay cannot be edited: {exc}")
            return
        except GitError as exc:
            await self.status.set(body, message=f"commit failed, retrying: {exc}")
            await self.auditor.audit(body, "CommitRetry", str(exc), warning=True)
            return
        if created and os.environ.get(FAULT_VARIABLE) == "promotion-after-push":
            # fault injection for the crash tests: die between the push and recording it
            log.warning("fault injection: killing the daemon after the promotion push", commit=sha)
            os.kill(os.getpid(), signal.SIGKILL)
        await self._record(body, sha, created, overlay_edit.previous)

    async def _record(self, body: Body, sha: str, created: bool, previous: list[dict[str, str]]) -> None:
        """Record the commit (or that none was needed) and fetch, so the target syncs it."""
        spec = body.get("spec") or {}
        if not sha:
            sha = await asyncio.to_thread(self.writer.find_head)
            note = f"{spec.get('to')} already holds the promoted values; no commit needed"
        else:
            note = f"committed {sha[:12]}" + ("" if created else " (found the commit already pushed)")
        fields: dict[str, Any] = {
            "commit": sha,
            "committedAt": now_iso(),
            "message": note + "; waiting for the sync",
        }
        if previous:
            fields["previousImages"] = previous
        body = await self.status.set(body, **fields)
        await self.auditor.audit(body, "Committed", note, commit=sha)
        self.host.request_fetch()
