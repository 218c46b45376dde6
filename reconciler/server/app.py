"""The aiohttp application: ``POST /webhooks/git``, ``/healthz``, ``/readyz``, the status API,
``/metrics`` and ``/openapi.json`` (every route is documented in ``reconciler.server.openapi``).

The webhook handler is built to be hit by hostile clients: a request that does not name a provider
or carry its signature is refused before its body is read; the body is capped (413, by Content-Length
and while reading) and must arrive within a timeout (408); the signature is checked over the raw bytes
before the JSON is parsed (``jsonbody``: depth, numbers and keys bounded); delivery ids are
deduplicated; and every failure is a 4xx with a short reason. Rate limits (429) keep two buckets
(``Buckets``): requests without a valid signature (per source address, and all sources together) and
valid signed deliveries (per provider), so a flood of the first kind, even from the address every
request comes from behind an Ingress, never blocks a signed delivery. A header that is not UTF-8 is a
400 on every route (``undecodable_headers``). The handler only records a hint and returns (202) within
milliseconds; fetching and syncing happen afterwards in the work queue. Connection-level limits (header
size, count and read time) are in ``reconciler.server.listener``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from reconciler.refusal import Refusal
from reconciler.server import listener, openapi, webhooks
from reconciler.settings import WebhookConfig

log = structlog.get_logger(__name__)


class Controller(Protocol):
    """What the HTTP surface needs from the daemon."""

    def push(self, push: webhooks.Push) -> str:
        """Record a push hint; returns "accepted" or why it is ignored."""

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready or not, with the reasons it is not."""

    def degraded(self) -> list[str]:
        """What does not work but leaves the daemon ready (a cluster other than the home one down)."""

    def liveness(self) -> list[str]:
        """The daemon's internal loops that died (empty while it is alive)."""

    async def environment_statuses(self) -> list[dict[str, Any]]:
        """Status of every environment."""


@dataclass
class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per source address."""

    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _hits: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, source: str) -> bool:
        """Count a request from ``source``; False when over the limit."""
        now = self.clock()
        hits = self._hits.setdefault(source, deque())
        while hits and now - hits[0] > self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 10000:  # bound memory under a spray of source addresses
            for key in list(self._hits)[:5000]:
                del self._hits[key]
        return True


class DeliveryLog:
    """Recently seen delivery ids (bounded), to refuse replays and redeliveries."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen before; records it otherwise."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False


# all sources together may send this many times the per-source limit of requests without a valid signature
UNVERIFIED_TOTAL_FACTOR = 10
UNVERIFIED_LIMITED = "too many requests without a valid signature from this address (or from all addresses)"


class Buckets:
    """Rate limits of signed HTTP calls, in separate buckets so a flood of forged or unsigned requests
    never blocks a correctly signed one from the same address (behind an Ingress every request comes
    from the controller's address).

    * ``unverified(source)``: every request refused before its signature was verified, or with an invalid
      one, counts against its source address (``limit`` per ``window``) and against all sources together
      (``UNVERIFIED_TOTAL_FACTOR`` times as many);
    * ``signed(signer, source, body)``: a valid signed request counts against its signer (a webhook
      provider, a promotion key) alone, unless its exact body was seen before: a replayed capture then
      counts as unverified, so replaying one delivery cannot exhaust the signer's bucket either.
    """

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._per_source = RateLimiter(limit, window, clock)
        self._total = RateLimiter(limit * UNVERIFIED_TOTAL_FACTOR, window, clock)
        self._signed = RateLimiter(limit, window, clock)
        self._bodies = DeliveryLog(size=4096)

    def unverified(self, source: str) -> bool:
        """Count a request without a valid signature; False when its source (or everyone) is over."""
        return self._per_source.allow(source) and self._total.allow("*")

    def signed(self, signer: str, source: str, body: bytes) -> bool:
        """Count a validly signed request of ``signer``; False when over its limit."""
        key = signer + ":" + hashlib.sha256(body).hexdigest()
        if key in self._bodies:
            return self.unverified(source)
        if not self._signed.allow(signer):
            return False
        self._bodies.seen(key)
        return True

    def retry_after(self) -> dict[str, str]:
        """The Retry-After header of a 429 (the whole window: the limiter does not say when it frees)."""
        return {"Retry-After": str(math.ceil(self.window))}


@dataclass
class ServerState:
    """Mutable state shared by the handlers."""

    controller: Controller
    config: WebhookConfig
    registry: CollectorRegistry
    webhook_requests: Counter
    buckets: Buckets
    deliveries: DeliveryLog = field(default_factory=DeliveryLog)
    accepting: bool = True


STATE = web.AppKey("state", ServerState)


MAX_REASON = 300


def short(reason: str) -> str:
    """A refusal reason capped for a response body (some quote what the client sent)."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


def _reply(
    state: ServerState,
    provider: str,
    status: int,
    result: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    state.webhook_requests.labels(provider=provider or "unknown", result=result).inc()
    if "reason" in extra:
        extra["reason"] = short(str(extra["reason"]))
    return web.json_response({"result": result, **extra}, status=status, headers=headers)


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, refused (``Refusal``) with 413 beyond ``limit`` bytes (by Content-Length, and
    while reading) and with 408 when it does not arrive within ``timeout`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                raise Refusal(413, f"body larger than {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise Refusal(408, f"body not received within {timeout:.0f} s") from None
    except web.RequestPayloadError:  # a broken chunked encoding (or content coding): the client's fault
        raise Refusal(400, "malformed request body") from None
    return b"".join(chunks)


async def _authenticate(state: ServerState, provider: str, request: web.Request) -> tuple[bytes, bool]:
    """The body, and whether its signature was verified (False only with ``insecure_no_secret``).

    Whatever cannot be valid is refused before the body is read: no provider, no secret for it, no
    signature header."""
    if not provider:
        raise webhooks.WebhookError(
            400, "unknown sender: no GitHub, GitLab, Gitea, Bitbucket or generic headers"
        )
    secret = state.config.secret(provider)
    if not secret:
        if not state.config.insecure_no_secret:
            raise webhooks.WebhookError(
                401, f"no secret is configured for {provider} webhooks: refusing them"
            )
        return await read_body(request, state.config.max_body_bytes, state.config.body_timeout), False
    if not webhooks.signature_header(provider, request.headers).strip():
        raise webhooks.WebhookError(401, "invalid or missing signature")
    body = await read_body(request, state.config.max_body_bytes, state.config.body_timeout)
    if not webhooks.verify(provider, request.headers, body, secret):
        raise webhooks.WebhookError(401, "invalid or missing signature")
    return body, True


def _refused(state: ServerState, provider: str, source: str, exc: Refusal) -> web.Response:
    log.info(
        "webhook refused", provider=provider or "unknown", status=exc.status, reason=exc.reason, source=source
    )
    return _reply(state, provider, exc.status, "refused", reason=exc.reason)


async def git_webhook(request: web.Request) -> web.Response:
    """POST /webhooks/git: verify, rate-limit (unverified and signed requests apart), deduplicate, record
    the hint, answer at once."""
    state = request.app[STATE]
    provider = webhooks.detect(request.headers)
    if not state.accepting:
        return _reply(state, provider, 503, "shutting-down")
    source = request.remote or "unknown"
    try:
        body, verified = await _authenticate(state, provider, request)
    except Refusal as exc:
        if not state.buckets.unverified(source):
            return _reply(
                state,
                provider,
                429,
                "rate-limited",
                reason=UNVERIFIED_LIMITED,
                headers=state.buckets.retry_after(),
            )
        return _refused(state, provider, source, exc)
    allowed = state.buckets.signed(provider, source, body) if verified else state.buckets.unverified(source)
    if not allowed:
        reason = (
            f"too many signed {provider} deliveries (or replays of one)" if verified else UNVERIFIED_LIMITED
        )
        return _reply(
            state, provider, 429, "rate-limited", reason=reason, headers=state.buckets.retry_after()
        )
    try:
        push = webhooks.parse(provider, request.headers, body)
    except Refusal as exc:
        return _refused(state, provider, source, exc)
    if push.delivery and state.deliveries.seen(f"{provider}:{push.delivery}"):
        return _reply(state, provider, 200, "duplicate")
    if push.kind == "ping":
        return _reply(state, provider, 200, "pong")
    if push.kind != "push":
        return _reply(state, provider, 202, "ignored", reason=f"event {push.event!r} does not trigger a sync")
    outcome = state.controller.push(push)
    log.info(
        "webhook",
        provider=provider,
        delivery=push.delivery,
        ref=push.ref,
        after=push.after[:12],
        outcome=outcome,
    )
    if outcome != "accepted":
        return _reply(state, provider, 202, "ignored", reason=outcome)
    return _reply(state, provider, 202, "accepted")


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers and none of the daemon's loops died (if one did, 500 with its
    name, so the kubelet restarts the process instead of leaving a daemon that silently does nothing)."""
    dead = request.app[STATE].controller.liveness()
    if dead:
        return web.json_response({"status": "failed", "reasons": dead}, status=500)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: configuration loaded, Git fetched once and fresh, the home cluster reachable. Other
    clusters that do not answer are listed as ``degraded`` but leave it ready: the replica must keep
    receiving webhooks for the clusters that work."""
    controller = request.app[STATE].controller
    ready, reasons = controller.readiness()
    body = {"ready": ready, "reasons": reasons, "degraded": controller.degraded()}
    return web.json_response(body, status=200 if ready else 503)


async def environments(request: web.Request) -> web.Response:
    """GET /api/v1/environments: every environment's status."""
    return web.json_response({"environments": await request.app[STATE].controller.environment_statuses()})


async def environment(request: web.Request) -> web.Response:
    """GET /api/v1/environments/{name}."""
    name = request.match_info["name"]
    for item in await request.app[STATE].controller.environment_statuses():
        if item.get("name") == name:
            return web.json_response(item)
    return web.json_response({"error": f"no environment named {name!r}"}, status=404)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_document(_: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3 document of these routes."""
    return web.json_response(openapi.document())


def undecodable_header(request: web.BaseRequest) -> str:
    """The name of the first header whose name or value is not UTF-8 ("" when all are)."""
    for name, value in request.raw_headers:
        try:
            name.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            return name.decode("ascii", "backslashreplace")[:64]
    return ""


@web.middleware
async def undecodable_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """400 for a request with a header that is not UTF-8, on every route, before any handler reads one
    (aiohttp hands such bytes on as lone surrogates, which crash whatever encodes them again)."""
    name = undecodable_header(request)
    if not name:
        return await handler(request)
    reason = f"header {name!r} is not valid UTF-8"
    if request.path == "/webhooks/git":
        state = request.app[STATE]
        return _reply(state, webhooks.detect(request.headers), 400, "refused", reason=reason)
    return web.json_response({"error": reason}, status=400)


def build_app(
    controller: Controller,
    config: WebhookConfig,
    registry: CollectorRegistry,
    webhook_requests: Counter,
) -> web.Application:
    """The application, with its state (``registry`` is served at /metrics; ``webhook_requests`` is
    the counter of ``reconciler.metrics.Metrics`` on it)."""
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[undecodable_headers],
        handler_args=listener.handler_args(),
    )
    state = ServerState(
        controller=controller,
        config=config,
        registry=registry,
        webhook_requests=webhook_requests,
        buckets=Buckets(config.rate_limit, config.rate_window),
    )
    app[STATE] = state
    app.router.add_post("/webhooks/git", git_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/environments", environments)
    app.router.add_get("/api/v1/environments/{name}", environment)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_document)
    return app
