"""What membership and claims share about ``coordination.k8s.io/v1`` Leases: names, labels and bodies,
the sighting clock that judges expiry, and the list-and-watch loop over a labelled set of Leases.

Expiry is judged as client-go's leader election judges it: by the local monotonic time at which this
process last *saw* a Lease change (its holder, renewTime or resourceVersion), plus the Lease's
``leaseDurationSeconds``. Remote clocks are never compared with ours, so clock skew between replicas
does not matter; a change seen late (a slow watch, a relist) only makes the Lease live longer in our
eyes, never shorter, which is the safe direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog

from reconciler import retry
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.objects import Body

log = structlog.get_logger(__name__)

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
GROUP_LABEL = "reconciler.dev/shard-group"
INSTANCE_ANNOTATION = "reconciler.dev/holder-instance"
DEFAULT_GROUP = "default"
_MAX_NAME = 63  # a DNS-1123 label: safe as a Lease name and as a label value
_HASH_CHARS = 8
_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9._-]+")


def dns_name(prefix: str, raw: str) -> str:
    """``prefix + raw`` as a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters).

    When ``raw`` had to be changed (upper case, dots, underscores...) or cut to fit, a hash of the
    original is appended, so two different inputs never share a name."""
    cleaned = _INVALID.sub("-", raw.lower()).strip("-")
    name = f"{prefix}{cleaned}"
    if cleaned == raw and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.blake2b(raw.encode(), digest_size=_HASH_CHARS // 2).hexdigest()
    head = name[: _MAX_NAME - _HASH_CHARS - 1].rstrip("-")
    return f"{head}-{digest}"


def label_value(raw: str) -> str:
    """``raw`` as a label value (at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends),
    with a hash appended when it had to be changed."""
    cleaned = _LABEL_INVALID.sub("-", raw).strip("-._")
    if cleaned == raw and len(raw) <= _MAX_NAME:
        return raw
    digest = hashlib.blake2b(raw.encode(), digest_size=_HASH_CHARS // 2).hexdigest()
    head = cleaned[: _MAX_NAME - _HASH_CHARS - 1].rstrip("-._")
    return f"{head}-{digest}" if head else digest


def micro_time() -> str:
    """Now, as a Lease's MicroTime (``2026-01-01T00:00:00.000000Z``). Written for people and tools
    reading the Lease; no replica judges expiry by it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def whole_seconds(duration: float) -> int:
    """A duration as ``leaseDurationSeconds`` (whole seconds, at least 1), rounded up: the Lease never
    promises less than the holder assumes."""
    return max(1, math.ceil(duration))


def lease_body(
    namespace: str,
    name: str,
    *,
    labels: dict[str, str],
    annotations: dict[str, str],
    spec: dict[str, Any],
) -> Body:
    """A complete Lease object (for a create)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def collection_path(namespace: str) -> str:
    """REST path of the Leases of ``namespace``."""
    return f"/apis/{API_VERSION}/namespaces/{quote(namespace, safe='')}/leases"


def lease_path(namespace: str, name: str) -> str:
    """REST path of one Lease."""
    return f"{collection_path(namespace)}/{quote(name, safe='')}"


def holder_of(lease: Body) -> str:
    """The Lease's ``spec.holderIdentity`` ("" when released)."""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def instance_of(lease: Body) -> str:
    """The holding process's instance id (our annotation; "" when absent)."""
    return str(((lease.get("metadata") or {}).get("annotations") or {}).get(INSTANCE_ANNOTATION) or "")


def version_of(lease: Body) -> str:
    """The Lease's resourceVersion."""
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")


@dataclass(frozen=True)
class Sighting:
    """One Lease as this process last saw it change: who held it, for how long, and when (local
    monotonic seconds) the change was first seen."""

    holder: str
    instance: str
    renew_time: str
    version: str
    duration: float
    seen_at: float

    @property
    def expires_at(self) -> float:
        """Local monotonic time after which the holder has not renewed for a full lease duration."""
        return self.seen_at + self.duration

    def expired(self, now: float) -> bool:
        """True when the Lease is free to take: released (no holder) or unrenewed for its duration."""
        return not self.holder or now >= self.expires_at


def sight(previous: Sighting | None, lease: Body, now: float, default_duration: float) -> Sighting:
    """The sighting after reading ``lease`` at local time ``now``: the clock restarts only when the
    holder, renewTime or resourceVersion changed since ``previous``."""
    spec = lease.get("spec") or {}
    holder = holder_of(lease)
    instance = instance_of(lease)
    renew_time = str(spec.get("renewTime") or "")
    version = version_of(lease)
    duration = float(spec.get("leaseDurationSeconds") or default_duration)
    if previous is not None and (
        previous.holder,
        previous.instance,
        previous.renew_time,
        previous.version,
    ) == (
        holder,
        instance,
        renew_time,
        version,
    ):
        return previous
    return Sighting(holder, instance, renew_time, version, duration, now)


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed. ``asyncio.timeout``, not ``wait_for``:
    Python 3.11's ``wait_for`` can swallow a cancellation that arrives as the event is set, and a loop
    using it then never stops (seen here: a cancelled TaskGroup waiting for ever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def follow(
    client: KubeClient,
    namespace: str,
    selector: str,
    *,
    on_list: Callable[[list[Body]], None],
    on_event: Callable[[str, Body], None],
    timeout_seconds: int = 60,
) -> None:
    """List the Leases matching ``selector`` in ``namespace``, then watch them, for ever: ``on_list``
    receives every (re)list, ``on_event`` every ADDED/MODIFIED/DELETED event. A failed or expired watch
    relists with backoff (``reconciler.retry.relists``)."""
    info = await client.resource(API_VERSION, KIND)
    async for attempt in retry.relists():
        with attempt:
            try:
                items, version = await client.list(info, label_selector=selector, namespace=namespace)
                on_list(items)
                while True:
                    async for event, lease in client.watch(
                        info,
                        version,
                        label_selector=selector,
                        namespace=namespace,
                        timeout_seconds=timeout_seconds,
                    ):
                        version = version_of(lease) or version
                        if event != "BOOKMARK":
                            on_event(event, lease)
            except KubeError as exc:
                log.warning("lease watch failed; relisting", selector=selector, error=str(exc))
                raise
