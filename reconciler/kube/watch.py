"""Kubernetes watch streams: one long GET with ``watch=1``, decoded line by line into (type, object)
events, with bookmarks, ERROR events and broken connections turned into ``reconciler.kube.errors``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from reconciler.kube.errors import TransientError, from_status
from reconciler.objects import Body

if TYPE_CHECKING:
    from reconciler.kube.client import KubeClient, ResourceInfo

JSON = "application/json"


@dataclass(frozen=True)
class WatchSelectors:
    """What one watch covers and how long the server keeps it open."""

    label_selector: str = ""
    field_selector: str = ""
    namespace: str = ""
    timeout_seconds: int = 300


async def events(
    client: KubeClient, info: ResourceInfo, resource_version: str, selectors: WatchSelectors
) -> AsyncIterator[tuple[str, Body]]:
    """Stream (type, object) events from ``resource_version`` until the server ends the watch."""
    query = [
        ("watch", "1"),
        ("allowWatchBookmarks", "true"),
        ("resourceVersion", resource_version),
        ("timeoutSeconds", str(selectors.timeout_seconds)),
    ]
    if selectors.label_selector:
        query.append(("labelSelector", selectors.label_selector))
    if selectors.field_selector:
        query.append(("fieldSelector", selectors.field_selector))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=selectors.timeout_seconds + 30)
    subject = f"watch {info.plural}"
    try:
        response = await client._send("GET", info.path(selectors.namespace), query, None, JSON, timeout)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        client.requests[("WATCH", 0)] += 1
        raise TransientError(subject, f"API server unreachable: {exc}") from exc
    client.requests[("WATCH", response.status)] += 1
    try:
        if response.status != 200:
            raise from_status(subject, response.status, await response.read())
        async for line in response.content:
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = str(event.get("type")), event.get("object") or {}
            if kind == "ERROR":
                raise from_status(subject, int(obj.get("code") or 500), json.dumps(obj))
            if kind != "BOOKMARK":
                obj.setdefault("apiVersion", info.api_version)
                obj.setdefault("kind", info.kind)
            yield kind, obj
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TransientError(subject, f"watch interrupted: {exc}") from exc
    finally:
        response.release()
