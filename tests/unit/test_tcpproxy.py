"""The delaying TCP proxy of the multi-cluster tests (tests/tcpproxy.py), in front of an echo server."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.devcluster.cluster import free_port
from tests.tcpproxy import DelayProxy, proxied_kubeconfig, server_address


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """An echo server on loopback: everything a connection sends comes back, until its end."""
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _connect(proxy: DelayProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _round_trip(sock: socket.socket, payload: bytes) -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert _receive(sock, len(payload)) == payload
    return time.monotonic() - started


def test_data_passes_intact_both_ways(echo: tuple[str, int]) -> None:
    """Four MiB of random bytes through the proxy come back unchanged, then the client's end of data
    reaches the server (a half-close) and the server's end reaches the client."""
    payload = os.urandom(4 * 1024 * 1024)
    with DelayProxy(*echo) as proxy, _connect(proxy) as sock:
        received = bytearray()

        def read_all() -> None:
            while chunk := sock.recv(65536):
                received.extend(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert bytes(received) == payload


def test_every_request_is_answered_after_the_delay(echo: tuple[str, int]) -> None:
    """Each exchange on a connection (not only the first) waits the delay; nothing is lost."""
    with DelayProxy(*echo, delay=0.3) as proxy, _connect(proxy) as sock:
        times = [_round_trip(sock, f"request {i}".encode()) for i in range(3)]
    print(f"round trips with a 0.3 s delay: {', '.join(f'{t:.3f}' for t in times)} s")
    assert all(t >= 0.3 for t in times), times
    assert all(t < 3.0 for t in times), times


def test_chunks_in_flight_are_delayed_once_not_one_after_another(echo: tuple[str, int]) -> None:
    """Five chunks sent 50 ms apart all come back about one delay after they were sent (a latency),
    not after five delays in a row."""
    delay = 0.5
    with DelayProxy(*echo, delay=delay) as proxy, _connect(proxy) as sock:
        started = time.monotonic()
        for index in range(5):
            sock.sendall(f"chunk {index};".encode())
            time.sleep(0.05)
        expected = "".join(f"chunk {i};" for i in range(5)).encode()
        assert _receive(sock, len(expected)) == expected
        elapsed = time.monotonic() - started
    print(f"five chunks with a {delay} s delay: {elapsed:.3f} s")
    assert delay + 0.2 <= elapsed < 3 * delay, elapsed


def test_the_delay_changes_on_a_connection_already_open(echo: tuple[str, int]) -> None:
    """A keep-alive connection opened without a delay slows down once the delay is set, and speeds up
    again when it is cleared."""
    with DelayProxy(*echo) as proxy, _connect(proxy) as sock:
        fast = _round_trip(sock, b"before")
        proxy.delay = 0.4
        slow = _round_trip(sock, b"during")
        proxy.delay = 0.0
        again = _round_trip(sock, b"after")
    print(f"round trips: {fast:.3f} s, then {slow:.3f} s with a 0.4 s delay, then {again:.3f} s")
    assert slow >= 0.4
    assert fast < 0.4
    assert again < 0.4
    assert proxy.connections == 1


def test_a_target_that_is_down_closes_the_client_connection() -> None:
    """Nothing listens on the target port: the client's connection is accepted and closed at once."""
    with DelayProxy("127.0.0.1", free_port()) as proxy, _connect(proxy) as sock:
        sock.sendall(b"anyone?")
        assert sock.recv(100) == b""


def test_stop_closes_open_connections_and_the_listener(echo: tuple[str, int]) -> None:
    """After stop, open connections end and new ones are refused."""
    proxy = DelayProxy(*echo).start()
    sock = _connect(proxy)
    try:
        assert _round_trip(sock, b"hello") < 5
        proxy.stop()
        with contextlib.suppress(ConnectionResetError):  # an abortive close is a close too
            assert sock.recv(100) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
    finally:
        sock.close()
        proxy.stop()


def test_proxied_kubeconfig_points_every_cluster_at_the_proxy(tmp_path: Path, echo: tuple[str, int]) -> None:
    """The copy keeps the credentials and the scheme; only the servers' addresses change."""
    source = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "a",
                "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="},
            }
        ],
        "users": [{"name": "admin", "user": {"client-certificate-data": "Q0VSVA=="}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "admin"}}],
        "current-context": "a",
    }
    source.write_text(yaml.safe_dump(config))
    assert server_address(source) == ("127.0.0.1", 6443)
    with DelayProxy(*server_address(source)) as proxy:
        copy = proxied_kubeconfig(source, tmp_path / "proxied", proxy)
        assert server_address(copy) == ("127.0.0.1", proxy.port)
    written = yaml.safe_load(copy.read_text())
    assert written["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{proxy.port}"
    assert written["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert written["users"] == config["users"]
    assert copy.stat().st_mode & 0o077 == 0
