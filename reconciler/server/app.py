"""The aiohttp application: ``POST /webhooks/git``, ``/healthz``, ``/readyz``, the status API,
``/metrics`` and ``/openapi.json`` (every route is documented in ``reconciler.server.openapi``).

The webhook handler is built to be hit by hostile clients: a per-source rate limit (429) is checked
before anything is read, the body is capped (413, by Content-Length and while reading) and must arrive
within a timeout (408), the signature is checked over the raw bytes before the JSON is parsed, delivery
ids are deduplicated, and every failure is a 4xx with a short reason. The handler only records a hint
and returns (202) within milliseconds; fetching and syncing happen afterwards in the work queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from reconciler.refusal import Refusal
from reconciler.server import openapi, webhooks
from reconciler.settings import WebhookConfig

log = structlog.get_logger(__name__)


class Controller(Protocol):
    """What the HTTP surface needs from the daemon."""

    def push(self, push: webhooks.Push) -> str:
        """Record a push hint; returns "accepted" or why it is ignored."""

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready or not, with the reasons it is not."""

    def liveness(self) -> list[str]:
        """The daemon's internal loops that died (empty while it is alive)."""

    def environment_statuses(self) -> list[dict[str, Any]]:
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

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen before; records it otherwise."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False


@dataclass
class ServerState:
    """Mutable state shared by the handlers."""

    controller: Controller
    config: WebhookConfig
    registry: CollectorRegistry
    webhook_requests: Counter
    limiter: RateLimiter
    deliveries: DeliveryLog = field(default_factory=DeliveryLog)
    accepting: bool = True


STATE = web.AppKey("state", ServerState)


def _reply(state: ServerState, provider: str, status: int, result: str, **extra: Any) -> web.Response:
    state.webhook_requests.labels(provider=provider or "unknown", result=result).inc()
    return web.json_response({"result": result, **extra}, status=status)


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
    return b"".join(chunks)


async def git_webhook(request: web.Request) -> web.Response:
    """POST /webhooks/git: verify, deduplicate, record the hint, answer at once."""
    state = request.app[STATE]
    provider = webhooks.detect(request.headers)
    if not state.accepting:
        return _reply(state, provider, 503, "shutting-down")
    source = request.remote or "unknown"
    if not state.limiter.allow(source):
        return _reply(state, provider, 429, "rate-limited")
    try:
        body = await read_body(request, state.config.max_body_bytes, state.config.body_timeout)
        if not provider:
            raise webhooks.WebhookError(
                400, "unknown sender: no GitHub, GitLab, Gitea, Bitbucket or generic headers"
            )
        secret = state.config.secret(provider)
        if secret:
            if not webhooks.verify(provider, request.headers, body, secret):
                raise webhooks.WebhookError(401, "invalid or missing signature")
        elif not state.config.insecure_no_secret:
            raise webhooks.WebhookError(
                401, f"no secret is configured for {provider} webhooks: refusing them"
            )
        push = webhooks.parse(provider, request.headers, body)
    except Refusal as exc:
        log.info(
            "webhook refused",
            provider=provider or "unknown",
            status=exc.status,
            reason=exc.reason,
            source=source,
        )
        return _reply(state, provider, exc.status, "refused", reason=exc.reason)
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
    """Readiness: configuration loaded, Git fetched once and fresh, clusters reachable."""
    ready, reasons = request.app[STATE].controller.readiness()
    return web.json_response({"ready": ready, "reasons": reasons}, status=200 if ready else 503)


async def environments(request: web.Request) -> web.Response:
    """GET /api/v1/environments: every environment's status."""
    return web.json_response({"environments": request.app[STATE].controller.environment_statuses()})


async def environment(request: web.Request) -> web.Response:
    """GET /api/v1/environments/{name}."""
    name = request.match_info["name"]
    for item in request.app[STATE].controller.environment_statuses():
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


def build_app(
    controller: Controller,
    config: WebhookConfig,
    registry: CollectorRegistry,
    webhook_requests: Counter,
) -> web.Application:
    """The application, with its state (``registry`` is served at /metrics; ``webhook_requests`` is
    the counter of ``reconciler.metrics.Metrics`` on it)."""
    app = web.Application(client_max_size=config.max_body_bytes)
    state = ServerState(
        controller=controller,
        config=config,
        registry=registry,
        webhook_requests=webhook_requests,
        limiter=RateLimiter(config.rate_limit, config.rate_window),
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
