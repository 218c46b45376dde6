"""HTTP routes of promotions: ``/api/v1/promotions`` (list, request, rollback), ``/{id}`` (read),
``/{id}/approvals`` and ``/{id}/rejections`` (signed decisions).

Mutating calls are HMAC-signed (see ``signing``): the body is capped and must arrive within a timeout,
the signature is checked over the raw bytes before anything else, and every refusal is a 4xx with a
short reason (and, for decisions on an existing promotion, an audited Event).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from reconciler.promotion.controller import PromotionController, summary
from reconciler.promotion.signing import MAX_BODY, SignedCall, verify
from reconciler.refusal import Refusal
from reconciler.server.app import read_body

BODY_TIMEOUT = 10.0

Lookup = Callable[[], PromotionController | None]


class _Routes:
    """How the handlers find the controller (created when the daemon starts)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup


LOOKUP = web.AppKey("promotions", _Routes)


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _controller(request: web.Request) -> PromotionController:
    controller = request.app[LOOKUP].lookup()
    if controller is None:
        raise web.HTTPNotFound(
            text='{"error": "promotions are not configured (no promotions.pipelines)"}',
            content_type="application/json",
        )
    return controller


async def _signed(request: web.Request, controller: PromotionController) -> SignedCall:
    body = await read_body(request, MAX_BODY, BODY_TIMEOUT)
    return verify(controller.settings, request.headers, body)


async def list_promotions(request: web.Request) -> web.Response:
    """GET /api/v1/promotions: every promotion, newest first."""
    controller = _controller(request)
    items = [summary(b) for b in await controller.store.list()]
    return web.json_response({"promotions": list(reversed(items))})


async def get_promotion(request: web.Request) -> web.Response:
    """GET /api/v1/promotions/{id}."""
    controller = _controller(request)
    body = await controller.store.get(request.match_info["id"])
    if body is None:
        return _error(404, f"no promotion named {request.match_info['id']!r}")
    return web.json_response(summary(body))


async def create_promotion(request: web.Request) -> web.Response:
    """POST /api/v1/promotions: a signed ``request`` (from, to, optional revision) or ``rollback``
    (to, optional target: a promotion id or a revision)."""
    controller = _controller(request)
    try:
        call = await _signed(request, controller)
        if call.action == "request":
            body = await controller.request(call)
        elif call.action == "rollback":
            body = await controller.rollback(call)
        else:
            return _error(400, f"action {call.action!r} is not a request or a rollback")
    except Refusal as exc:
        return _error(exc.status, exc.reason)
    return web.json_response(summary(body), status=201)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    controller = _controller(request)
    name = request.match_info["id"]
    try:
        call = await _signed(request, controller)
    except Refusal as exc:
        await controller.refuse_unsigned(name, "approval" if approve else "rejection", exc.reason)
        return _error(exc.status, exc.reason)
    try:
        body = await controller.decide(name, call, approve=approve)
    except Refusal as exc:
        return _error(exc.status, exc.reason)
    return web.json_response(summary(body))


async def approve(request: web.Request) -> web.Response:
    """POST /api/v1/promotions/{id}/approvals: a signed approval of the promotion's exact revision."""
    return await _decide(request, approve=True)


async def reject(request: web.Request) -> web.Response:
    """POST /api/v1/promotions/{id}/rejections: a signed rejection."""
    return await _decide(request, approve=False)


def add_routes(app: web.Application, lookup: Lookup) -> None:
    """Register the promotion routes; ``lookup`` returns the controller (None: not configured)."""
    app[LOOKUP] = _Routes(lookup)
    app.router.add_get("/api/v1/promotions", list_promotions)
    app.router.add_post("/api/v1/promotions", create_promotion)
    app.router.add_get("/api/v1/promotions/{id}", get_promotion)
    app.router.add_post("/api/v1/promotions/{id}/approvals", approve)
    app.router.add_post("/api/v1/promotions/{id}/rejections", reject)
