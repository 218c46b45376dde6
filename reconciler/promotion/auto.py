"""Automatic promotion requests: for pipelines with ``auto_request``, request a promotion once the
source is Synced and Healthy at inputs no promotion has been requested for yet, unless the target
already runs the same images. A refusal is logged once, not on every pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection

import structlog

from reconciler.objects import Body
from reconciler.promotion import edit
from reconciler.promotion.overlay import Overlays
from reconciler.promotion.policy import Pipeline, PromotionSettings
from reconciler.promotion.signing import SignedCall
from reconciler.promotion.views import EnvView, Host, PromotionError

log = structlog.get_logger(__name__)

Request = Callable[..., Awaitable[Body]]


class AutoRequests:
    """The automatic requests the leader makes on each pass."""

    def __init__(self, settings: PromotionSettings, host: Host, overlays: Overlays, request: Request) -> None:
        self.settings = settings
        self.host = host
        self.overlays = overlays
        self.request = request
        self._errors: dict[str, str] = {}  # pipeline -> the last automatic request's refusal

    async def run(self, promotions: list[Body], pipelines: Collection[str]) -> None:
        """Request what each automatic pipeline (of ``pipelines``) source now runs, when nobody has yet."""
        for pipeline in self.settings.pipelines:
            if not pipeline.auto_request or pipeline.name not in pipelines:
                continue
            view = self.host.environment_view(pipeline.source)
            if view is None or not view.ok or not view.input_key:
                continue
            if any(
                (p.get("spec") or {}).get("pipeline") == pipeline.name
                and (p.get("spec") or {}).get("sourceInputKey") == view.input_key
                for p in promotions
            ):
                continue
            target = self.host.environment_view(pipeline.target)
            try:
                if await self._already_there(pipeline, view, target):
                    continue
                await self.request(_call(pipeline, view), automatic=True)
            except (PromotionError, edit.EditError) as exc:
                if self._errors.get(pipeline.name) != str(exc):  # once, not on every pass
                    log.warning("automatic promotion request failed", pipeline=pipeline.name, error=str(exc))
                self._errors[pipeline.name] = str(exc)
            else:
                self._errors.pop(pipeline.name, None)

    async def _already_there(self, pipeline: Pipeline, view: EnvView, target: EnvView | None) -> bool:
        """True when the target already runs the images the source would promote."""
        images, _ = await asyncio.to_thread(self.overlays.promoted_values, pipeline, view.path, view.revision)
        if target is not None and target.revision and pipeline.images and not pipeline.files:
            text = await asyncio.to_thread(self.overlays.kustomization_text, target.path, target.revision)
            current = edit.read_images(text) if text is not None else None
            if current is not None and edit.merge_images(current, images) == current:
                return True
        return False


def _call(pipeline: Pipeline, view: EnvView) -> SignedCall:
    """The request the daemon makes on its own behalf."""
    return SignedCall(
        identity="reconciler",
        key_id="reconciler",
        via_integration=True,
        action="request",
        nonce=f"auto-{pipeline.name}-{view.input_key[:32]}",
        timestamp=time.time(),
        payload={"from": pipeline.source, "to": pipeline.target, "revision": view.revision},
    )
