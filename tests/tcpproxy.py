"""A delaying TCP proxy for tests and benchmarks: a slow API server without touching the API server.

``DelayProxy`` listens on 127.0.0.1 (a free port) and forwards every connection to a target host and
port. Each chunk read from a client is written to the server ``delay`` seconds after it arrived (in
order; the delay in force when the chunk arrived counts), so every request, TLS handshakes included,
is answered that much later; what the server sends back is forwarded at once. The delay can be changed
at any time, and applies to connections already open (a client's keep-alive connections and watches
slow down too). It runs an asyncio loop in a background thread, so plain synchronous test code starts
and stops it, or uses it as a context manager::

    with DelayProxy("127.0.0.1", 6443) as proxy:
        proxy.delay = 5.0
        ...

``proxied_kubeconfig`` writes a copy of a kubeconfig whose server is the proxy: the local cluster's
serving certificate is valid for 127.0.0.1 whatever the port, so TLS still verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import yaml

CHUNK = 65536
_EOF, _FAILED = 0.0, -1.0  # how a client's data ended (the marker's first field)


class DelayProxy:
    """A TCP proxy from 127.0.0.1:<port> to ``host``:``port`` delaying client-to-server data."""

    def __init__(self, host: str, port: int, delay: float = 0.0, listen_host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listen_host = listen_host
        self.delay = delay  # read by the loop thread for each chunk; a float assignment is atomic
        self.port = 0
        self.connections = 0  # accepted so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Event  # set by stop(); made in the loop thread

    # -- life cycle (from the caller's thread) ---------------------------------------------------
    @property
    def address(self) -> str:
        """``host:port`` where the proxy listens."""
        return f"{self.listen_host}:{self.port}"

    def start(self) -> DelayProxy:
        """Start listening (a free port, see ``port``); return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"delay-proxy-{self.target[1]}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener and every open connection; stop the thread."""
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop, self._thread = None, None

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the loop thread ---------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._closing = asyncio.Event()
        self._server = await asyncio.start_server(self._accepted, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closing.set()  # every connection ends (cancelling their tasks would make asyncio complain)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accepted(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the target is down: the client sees its connection closed
            try:
                await _first_completed(
                    self._upstream(client_reader, server_writer),
                    _pump(server_reader, client_writer),
                    self._closing.wait(),
                )
            finally:
                server_writer.close()
        finally:
            client_writer.close()
            self._tasks.discard(task)

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to server: each chunk written ``delay`` s after it was read, in order. The client's
        end of data is passed on (after the chunks before it) and the answer still awaited; a client
        error ends the connection."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            end = _FAILED
            try:
                while chunk := await reader.read(CHUNK):
                    queue.put_nowait((time.monotonic() + self.delay, chunk))
                end = _EOF
            finally:
                queue.put_nowait((end, b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            if due == _FAILED:
                return
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.Event().wait()  # half-closed: the answer may still come
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server to client, as it comes."""
    while chunk := await reader.read(CHUNK):
        writer.write(chunk)
        await writer.drain()


async def _first_completed(*coroutines: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines until one ends (or fails: a reset connection); cancel the others."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def server_address(kubeconfig: Path) -> tuple[str, int]:
    """The host and port of the (first) cluster's API server in ``kubeconfig``."""
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    parts = urlsplit(server)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{kubeconfig}: no host and port in {server!r}")
    return parts.hostname, parts.port


def proxied_kubeconfig(source: Path, target: Path, proxy: DelayProxy) -> Path:
    """Write a copy of ``source`` whose every cluster's server is ``proxy`` (same scheme); return it."""
    config = yaml.safe_load(source.read_text())
    for entry in config["clusters"]:
        scheme = urlsplit(entry["cluster"]["server"]).scheme
        entry["cluster"]["server"] = f"{scheme}://{proxy.address}"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)
    return target
