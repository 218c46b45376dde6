"""Readiness probes of a local cluster's components: a tiny synchronous HTTPS client authenticated as
the admin, etcd's health, an API path answering 200, and the fake nodes being Ready."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from reconciler.devcluster import pki


class Http:
    """Tiny synchronous client for the readiness checks, authenticated as the admin."""

    def __init__(self, server: str, paths: pki.PkiPaths) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(paths.ca_cert))
        self.context.load_cert_chain(str(paths.admin_cert), str(paths.admin_key))

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the server is our own https loopback URL
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=timeout) as response:  # noqa: S310
                status: int = response.status
                return status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def etcd_healthy(url: str) -> bool:
    """etcd at ``url`` reports itself healthy."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310
            return bool(json.loads(response.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def ok(http: Http, path: str) -> bool:
    """``path`` answers 200."""
    try:
        status, _ = http.request("GET", path, timeout=3)
    except (OSError, ssl.SSLError):
        return False
    return status == 200


def nodes_ready(http: Http, count: int) -> bool:
    """At least ``count`` fake (kwok) nodes are Ready."""
    try:
        status, body = http.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok", timeout=3)
    except (OSError, ssl.SSLError):
        return False
    if status != 200:
        return False
    ready = 0
    for node in json.loads(body).get("items", []):
        for condition in node.get("status", {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready += 1
    return ready >= count
