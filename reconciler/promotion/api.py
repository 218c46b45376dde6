"""HTTP routes of promotions: ``/api/v1/promotions`` (list, request, rollback), ``/{id}`` (read),
``/{id}/approvals`` and ``/{id}/rejections`` (signed decisions).

Every call is signed (see ``signing``): reads too, since promotions name requesters, approvers and commit
authors (a read signs its method, path and time, by an approver's SSH key or an integration's secret).
Mutating calls a call without the signature headers is refused before
its body is read, the body is capped and must arrive within a timeout, the signature is checked over the
raw bytes before anything else, and every refusal is a 4xx with a short reason (and, for decisions on an
existing promotion, an audited Event). Rate limits (429) keep calls without a valid signature (per source
address, and all together) apart from valid ones (per key; a replayed body counts as unverified), as the
webhooks do (``reconciler.server.app.Buckets``): a flood of forged calls never blocks a signed one, and is
not audited beyond the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from reconciler.promotion.controller import PromotionController, summary
from reconciler.promotion.signing import (
    MAX_BODY,
    SignedCall,
    authenticate,
    authenticate_read,
    check,
    credentials,
)
from reconciler.refusal import Refusal
from reconciler.server.app import UNVERIFIED_LIMITED, Buckets, RateLimiter, read_body, short

BODY_TIMEOUT = 10.0
RATE_LIMIT = 60  # per RATE_WINDOW seconds: signed calls per key, unsigned or forged ones per address
RATE_WINDOW = 60.0
READS_FACTOR = 10

Lookup = Callable[[], PromotionController | None]


class RateLimited(Refusal):
    """A call over its rate limit: answered 429 and not audited."""


class _Routes:
    """How the handlers find the controller (created when the daemon starts), and the rate limits."""

    def __init__(self, lookup: Lookup, buckets: Buckets, reads: RateLimiter) -> None:
        self.lookup = lookup
        self.buckets = buckets
        self.reads = reads  # signed reads per key (a CLI or dashboard polls: READS_FACTOR times the calls)


LOOKUP = web.AppKey("promotions", _Routes)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": short(reason)}, status=status, headers=headers)


def _limited(request: web.Request, exc: RateLimited) -> web.Response:
    return _error(exc.status, exc.reason, request.app[LOOKUP].buckets.retry_after())


def _controller(request: web.Request) -> PromotionController:
    controller = request.app[LOOKUP].lookup()
    if controller is None:
        raise web.HTTPNotFound(
            text='{"error": "promotions are not configured (no promotions.pipelines)"}',
            content_type="application/json",
        )
    return controller


async def _signed(request: web.Request, controller: PromotionController) -> SignedCall:
    buckets = request.app[LOOKUP].buckets
    source = request.remote or "unknown"
    try:
        credentials(request.headers)  # an unsigned call is refused before its body is read
        body = await read_body(request, MAX_BODY, BODY_TIMEOUT)
        signer = authenticate(controller.settings, request.headers, body)
    except Refusal:
        if not buckets.unverified(source):
            raise RateLimited(429, UNVERIFIED_LIMITED) from None
        raise
    if not buckets.signed("key:" + signer.key_id, source, body):
        raise RateLimited(429, f"too many signed calls with key {signer.key_id!r} (or replays of one)")
    return check(controller.settings, signer, body)


def _read_refused(request: web.Request, controller: PromotionController) -> web.Response | None:
    """None when the read is signed by a key of the policy; the refusal (401, or 429) otherwise."""
    buckets = request.app[LOOKUP].buckets
    source = request.remote or "unknown"
    try:
        signer = authenticate_read(controller.settings, request.headers, request.method, request.path_qs)
    except Refusal as exc:
        if not buckets.unverified(source):
            return _limited(request, RateLimited(429, UNVERIFIED_LIMITED))
        return _error(exc.status, exc.reason)
    if not request.app[LOOKUP].reads.allow(signer.key_id):
        return _limited(request, RateLimited(429, f"too many signed reads with key {signer.key_id!r}"))
    return None


async def list_promotions(request: web.Request) -> web.Response:
    """GET /api/v1/promotions (signed read): every promotion, newest first."""
    controller = _controller(request)
    refused = _read_refused(request, controller)
    if refused is not None:
        return refused
    items = [summary(b) for b in await controller.store.list()]
    return web.json_response({"promotions": list(reversed(items))})


async def get_promotion(request: web.Request) -> web.Response:
    """GET /api/v1/promotions/{id} (signed read)."""
    controller = _controller(request)
    refused = _read_refused(request, controller)
    if refused is not None:
        return refused
    body = await controller.store.get(request.match_info["id"])
    if body is None:
        return _error(404, f"no promotion named {request.match_info['id']!r}")
    return web.json_response(summary(body))


async def create_promotion(request: web.Request) -> web.Response:
    """POST /api/v1/promotions: a signed ``request`` (from, to, optional revision; with ``dry_run:
    true`` only the commit it would make, 200) or ``rollback`` (to, optional target: a promotion id or
    a revision)."""
    controller = _controller(request)
    try:
        call = await _signed(request, controller)
        if call.action == "request" and call.payload.get("dry_run") is True:
            return web.json_response(await controller.preview(call))
        if call.action == "request":
            body = await controller.request(call)
        elif call.action == "rollback":
            body = await controller.rollback(call)
        else:
            return _error(400, f"action {call.action!r} is not a request or a rollback")
    except RateLimited as exc:
        return _limited(request, exc)
    except Refusal as exc:
        return _error(exc.status, exc.reason)
    return web.json_response(summary(body), status=201)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    controller = _controller(request)
    name = request.match_info["id"]
    try:
        call = await _signed(request, controller)
    except RateLimited as exc:
        return _limited(request, exc)
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


def add_routes(
    app: web.Application, lookup: Lookup, *, rate_limit: int = RATE_LIMIT, rate_window: float = RATE_WINDOW
) -> None:
    """Register the promotion routes; ``lookup`` returns the controller (None: not configured)."""
    app[LOOKUP] = _Routes(
        lookup, Buckets(rate_limit, rate_window), RateLimiter(rate_limit * READS_FACTOR, rate_window)
    )
    app.router.add_get("/api/v1/promotions", list_promotions)
    app.router.add_post("/api/v1/promotions", create_promotion)
    app.router.add_get("/api/v1/promotions/{id}", get_promotion)
    app.router.add_post("/api/v1/promotions/{id}/approvals", approve)
    app.router.add_post("/api/v1/promotions/{id}/rejections", reject)
