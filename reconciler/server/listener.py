"""Connection-level limits of the daemon's HTTP server: the size, count and read time of request headers,
and how long an idle keep-alive connection stays open.

aiohttp caps each header line and the number of headers (``handler_args``, set on the application by
``build_app``) but not the time headers take to arrive: a client that sends ``POST /webhooks/git
HTTP/1.1\\r\\nHost: x\\r\\n`` and then one byte a second (slowloris) holds its connection, and a task, for
as long as it likes. ``Site`` is a ``web.TCPSite`` whose connections answer 408 and close when a
request's headers are not complete ``header_timeout`` seconds after their first byte (the first request's:
after the connection opened), and 431 when more than ``max_header_bytes`` arrive without completing
them. An idle keep-alive connection (between requests, nothing sent) is not timed by this; aiohttp's
``keepalive_timeout`` closes it. ``Site`` also refuses (400) an ``Expect`` header that is not UTF-8:
aiohttp answers ``Expect`` before any middleware runs, and its default handler crashes (500) quoting such
a value; every other header is checked by the application's middleware
(``reconciler.server.app.undecodable_headers``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

HEADER_TIMEOUT = 10.0
# longer than the upstream keep-alive of the Ingress controller in front (ingress-nginx: 60 s), so the
# daemon never closes a connection the proxy is about to reuse; aiohttp's default is an hour
KEEPALIVE_TIMEOUT = 75.0
MAX_LINE_SIZE = 8190  # the request line, and each header line
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
MAX_HEADER_BYTES = 32 * 1024  # all the header lines of one request


def handler_args() -> dict[str, Any]:
    """aiohttp's per-connection options: header limits, the keep-alive timeout, and no automatic
    decompression of request bodies (no sender compresses, and a refused request must stay cheap)."""
    return {
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "auto_decompress": False,
    }


def _response(status: int, phrase: str, reason: str) -> bytes:
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _refusing_undecodable_expect(handler: _RequestHandler) -> _RequestHandler:
    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        for name, value in request.raw_headers:
            if name.lower() == b"expect":
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return web.json_response({"error": "header 'Expect' is not valid UTF-8"}, status=400)
        return await handler(request)

    guarded.refuses_undecodable_expect = True  # type: ignore[attr-defined]
    return guarded


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, with a deadline and a size cap on each request's headers.

    The timer starts when the connection opens, and again at the first byte that arrives while the
    handler waits for a new request; it stops when aiohttp has parsed a request's headers. (aiohttp
    exposes neither, so this reads two of its handler's attributes: ``_request_count``, the requests
    parsed, and ``_waiter``, pending while it waits for one; tests/unit/test_http_hostile.py fails if
    they change.)
    """

    def __init__(self, inner: web.RequestHandler, timeout: float, max_bytes: int) -> None:
        self.inner = inner
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes of the headers being timed

    def _idle(self) -> bool:
        waiter = self.inner._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._received = 0
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._refuse(408, "Request Timeout", f"request headers not received within {self.timeout:g} s")

    def _refuse(self, status: int, phrase: str, reason: str) -> None:
        self._disarm()
        if self._transport is None or self._transport.is_closing():
            return
        # the handler is idle (waiting for these headers): nothing else writes on the connection
        self._transport.write(_response(status, phrase, reason))
        self.inner.force_close()  # closes the transport once the answer is written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._timer is None and self._idle():
            self._arm()
        parsed = self.inner._request_count
        self.inner.data_received(data)
        if self._timer is None:
            return
        if self.inner._request_count != parsed:
            self._disarm()
            return
        self._received += len(data)
        if self._received > self.max_bytes:
            self._refuse(
                431, "Request Header Fields Too Large", f"request headers larger than {self.max_bytes} bytes"
            )

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # as aiohttp's: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Site(web.TCPSite):
    """``web.TCPSite`` whose connections go through ``HeaderDeadline``, and whose requests are refused
    (400) before aiohttp answers their ``Expect`` header when it is not UTF-8."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        max_header_bytes: int = MAX_HEADER_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes

    async def start(self) -> None:
        """Listen, as ``web.TCPSite.start`` does, with each connection's protocol wrapped."""
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        if not getattr(server.request_handler, "refuses_undecodable_expect", False):
            server.request_handler = _refusing_undecodable_expect(server.request_handler)

        def protocol() -> HeaderDeadline:
            return HeaderDeadline(server(), self.header_timeout, self.max_header_bytes)

        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
