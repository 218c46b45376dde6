"""Promotion objects (``promotions.reconciler.dev/v1alpha1``) in the cluster, and their Events.

It owns the order of promotions every replica agrees on (``order``: creationTimestamp, then the
creating replica's ``requested-at`` annotation, then the name), by which a newer request supersedes the
open ones.

The Promotion custom resource is the durable state of a promotion: the spec is written once at request
time (what is promoted, from which revision, who asked, who authored it), the status holds the phase,
the approvals and the commit. Status updates go through the status subresource with the object's
resourceVersion (optimistic concurrency), re-read and retried on a conflict, so two replicas recording
approvals at once never lose one.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import ConflictError, KubeError, NotFoundError
from reconciler.objects import Body

GROUP = "reconciler.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Promotion"


class Phase(enum.StrEnum):
    """A Promotion's phase (a ``str``: it is stored and compared as the plain name)."""

    PENDING = "Pending"
    APPROVED = "Approved"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    SUPERSEDED = "Superseded"


ACTIVE_PHASES = (Phase.PENDING, Phase.APPROVED, Phase.PROMOTING)
OPEN_PHASES = (Phase.PENDING, Phase.APPROVED)  # still taking decisions; a newer request supersedes them
TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.FAILED, Phase.REJECTED, Phase.EXPIRED, Phase.SUPERSEDED)
MAX_RECORDS = 100
# the creating replica's clock when it created the promotion (fixed-width, so it sorts as text)
REQUESTED_AT = f"{GROUP}/requested-at"


def now_iso() -> str:
    """The current time as RFC 3339 (seconds)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    """Unix seconds of an RFC 3339 timestamp (0 for an empty one)."""
    if not value:
        return 0.0
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def new_name(pipeline: str) -> str:
    """A unique, sortable promotion name."""
    return f"{pipeline}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def order(body: Body) -> tuple[str, str, str]:
    """The order of promotions every replica agrees on, newest last: the API server's creationTimestamp
    (RFC 3339 in UTC, whole seconds), then, within a second, the ``requested-at`` annotation the
    creating replica wrote into the object (its clock, in microseconds), then the name."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return (
        str(metadata.get("creationTimestamp", "")),
        str(annotations.get(REQUESTED_AT, "")),
        str(metadata.get("name", "")),
    )


def phase(body: Body) -> Phase:
    """The promotion's phase (Pending until the status says otherwise; a phase this version does not
    know, written by hand or by a newer one, counts as Failed: never as open to decisions)."""
    try:
        return Phase(str((body.get("status") or {}).get("phase") or Phase.PENDING))
    except ValueError:
        return Phase.FAILED


class PromotionStore:
    """Promotions in one namespace of one cluster."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _path(self, name: str = "", subresource: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(self.namespace, safe='')}/promotions"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    async def create(self, spec: dict[str, Any], status: dict[str, Any], name: str) -> Body:
        """Create a promotion, then set its initial status."""
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "annotations": {REQUESTED_AT: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            },
            "spec": spec,
        }
        await self.client.ensure_namespace(self.namespace)
        created = await self.client.request("POST", self._path(), body=body, subject=f"{KIND}/{name}")
        created["status"] = status
        try:
            return await self.client.request(
                "PUT", self._path(name, "status"), body=created, subject=f"{KIND}/{name}"
            )
        except ConflictError:
            pass  # another replica wrote its status first (a newer request superseded it): keep that

        def complete(fresh: Body) -> bool:
            missing = {k: v for k, v in status.items() if k not in fresh["status"]}
            fresh["status"].update(missing)
            return bool(missing)

        stored = await self.update_status(name, complete)
        if stored is None:
            raise NotFoundError(f"{KIND}/{name}", "deleted right after it was created")
        return stored

    async def get(self, name: str) -> Body | None:
        """One promotion, or None."""
        try:
            return await self.client.request("GET", self._path(name), subject=f"{KIND}/{name}")
        except NotFoundError:
            return None

    async def list(self) -> list[Body]:
        """Every promotion, oldest first."""
        try:
            result = await self.client.request("GET", self._path(), subject="list promotions")
        except NotFoundError:
            return []
        items = list(result.get("items") or [])
        items.sort(key=order)
        return items

    async def update_status(
        self, name: str, mutate: Callable[[Body], bool], attempts: int = 8
    ) -> Body | None:
        """Apply ``mutate`` to a fresh copy and write its status; ``mutate`` returns False to skip the
        write. Retried on a resourceVersion conflict; returns the stored object (None if it is gone)."""
        for _ in range(attempts):
            body = await self.get(name)
            if body is None:
                return None
            body.setdefault("status", {})
            if not mutate(body):
                return body
            status = body["status"]
            for key in ("approvals", "rejections", "nonces"):
                if isinstance(status.get(key), list):
                    status[key] = status[key][-MAX_RECORDS:]
            try:
                return await self.client.request(
                    "PUT", self._path(name, "status"), body=body, subject=f"{KIND}/{name}"
                )
            except ConflictError:
                continue
        raise KubeError(f"{KIND}/{name}", "status update kept conflicting with other writers")

    async def event(self, body: Body, reason: str, message: str, *, warning: bool = False) -> None:
        """Record a Kubernetes Event about ``body`` (best effort: a failure is not fatal)."""
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name", ""))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{secrets.token_hex(6)}", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": name,
                "namespace": self.namespace,
                "uid": metadata.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "reconciler-promotions"},
            "firstTimestamp": now_iso(),
            "lastTimestamp": now_iso(),
            "count": 1,
        }
        try:
            await self.client.request(
                "POST", f"/api/v1/namespaces/{quote(self.namespace, safe='')}/events", body=event
            )
        except KubeError:
            return
