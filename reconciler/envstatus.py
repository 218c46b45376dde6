"""The ``Environment`` custom resources (``reconciler.dev/v1alpha1``): each configured environment as
kubectl sees it, with its status and kstatus conditions.

One object per environment, in the daemon's ``inventory_namespace`` of the cluster the environment is
synced to (``kubectl get environments -n reconciler-system`` prints revision, sync, health and Ready).
The spec mirrors the daemon's configuration (it is informative: policy stays in the configuration); the
status is derived from the environment's last sync: applied and attempted revision, sync and health,
object counts, and the kstatus conditions ``Ready``, ``Reconciling`` and ``Stalled``
(``next_conditions``, pure), and ``lastAppliedChange``: the last sync that created, configured or deleted
something (its revision, time and summary), which a later no-op sync does not hide; a new leader or a
restarted daemon reads it back from the object (``previous_change``). Only the leader writes, with
server-side apply, and the status only when it changed, so a no-op resync writes nothing.

A field is left out of the status rather than written empty: with server-side apply, an empty map where
the field manager owned keys before becomes ``null``, which the schema refuses (``status.changes:
Invalid value: "null"``), and the whole write with it. A refused write is logged as a warning whenever
an environment's writes start failing or fail differently (repeats are debug lines), and once when they
succeed again; ``report`` returns False so the caller retries. The CRD ships in
``reconciler/crds/environments.yaml``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from reconciler.events import InvolvedObject
from reconciler.kube.client import APPLY_PATCH, KubeClient
from reconciler.kube.errors import KubeError, NoMatchError, NotFoundError
from reconciler.objects import Action, ChangeSet

log = structlog.get_logger(__name__)

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "Environment"
FIELD_MANAGER = "reconciler-status"
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled")


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_conditions(
    previous: Sequence[Mapping[str, Any]],
    condition: str,
    reason: str,
    message: str,
    now: str,
    generation: int = 0,
) -> list[dict[str, Any]]:
    """kstatus conditions for an environment whose condition is ``condition`` (Ready, Reconciling or
    Stalled): that one is True, the others False; a condition keeps its ``lastTransitionTime`` while
    its status does not change."""
    before = {str(c.get("type")): c for c in previous}
    result: list[dict[str, Any]] = []
    for kind in CONDITION_TYPES:
        status = "True" if kind == condition else "False"
        old = before.get(kind)
        since = (
            now if old is None or old.get("status") != status else str(old.get("lastTransitionTime") or now)
        )
        item: dict[str, Any] = {
            "type": kind,
            "status": status,
            "reason": reason or condition,
            "message": message[:1024],
            "lastTransitionTime": since,
        }
        if generation:
            item["observedGeneration"] = generation
        result.append(item)
    return result


def status_body(status: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """The ``status`` of an Environment from the daemon's status of it (``EnvironmentState.status()``)."""
    applied = str(status.get("appliedRevision") or "")
    body: dict[str, Any] = {
        "observedGeneration": generation,
        "revision": applied,
        "shortRevision": applied[:12],
        "lastAttemptedRevision": str(status.get("revision") or ""),
        "sync": status.get("sync", "Unknown"),
        "health": status.get("health", "Unknown"),
        "pruneBlocked": str(status.get("pruneBlocked") or ""),
        "conditions": [
            {**c, "observedGeneration": generation} if generation else dict(c)
            for c in status.get("conditions") or []
        ],
    }
    if status.get("owner"):
        body["owner"] = str(status["owner"])[:253]
    # never an empty map: server-side apply would turn it into a refused null (see the module docstring)
    if status.get("changes"):
        body["changes"] = dict(status["changes"])
    if status.get("lastAppliedChange"):
        change = status["lastAppliedChange"]
        fields = {key: str(change.get(key) or "")[:1024] for key in ("revision", "time", "summary")}
        body["lastAppliedChange"] = {key: value for key, value in fields.items() if value}
    if status.get("inventoryObjects") is not None:
        body["inventoryObjects"] = int(status["inventoryObjects"])
    return body


def from_object(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status API's fields from an Environment object's ``status`` (written by the replica that
    syncs it); empty when there is none yet."""
    if not status:
        return {}
    conditions = [
        {key: c[key] for key in ("type", "status", "reason", "message", "lastTransitionTime") if key in c}
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    ]
    current = next((c for c in conditions if c.get("status") == "True"), None)
    found: dict[str, Any] = {
        "revision": str(status.get("lastAttemptedRevision") or ""),
        "appliedRevision": str(status.get("revision") or ""),
        "sync": status.get("sync") or "Unknown",
        "health": status.get("health") or "Unknown",
        "conditions": conditions,
    }
    if status.get("owner"):
        found["owner"] = str(status["owner"])
    if current is not None:
        found.update(
            condition=current.get("type"), reason=current.get("reason"), message=current.get("message", "")
        )
    for key in ("changes", "lastAppliedChange", "inventoryObjects"):
        if status.get(key) is not None:
            found[key] = status[key]
    if status.get("pruneBlocked"):
        found["pruneBlocked"] = status["pruneBlocked"]
    return found


@dataclass
class _Known:
    spec: dict[str, Any]
    uid: str
    generation: int
    status: dict[str, Any] = field(default_factory=dict)


class EnvironmentObjects:
    """Creates and updates the Environment objects of one cluster."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._known: dict[str, _Known] = {}
        self._namespace_ready = False
        self._failing: dict[str, str] = {}  # environment -> the error its last write failed with
        self._previous: dict[str, dict[str, Any]] | None = None  # lastAppliedChange by name, once listed

    def involved(self, name: str) -> InvolvedObject:
        """The Environment as an Event's involvedObject (with its uid once known)."""
        known = self._known.get(name)
        return InvolvedObject(API_VERSION, KIND, self.namespace, name, known.uid if known else "")

    async def report(self, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Make the Environment exist with ``spec`` and carry ``status``; False when it could not be
        written (a missing CRD or RBAC must not stop syncs: the caller retries later)."""
        try:
            known = await self._ensure(name, dict(spec))
            body = status_body(status, known.generation)
            if body != known.status:
                await self._apply(name, "/status", {"status": body})
                known.status = body
        except KubeError as exc:
            error = str(exc)
            repeat = self._failing.get(name) == error
            hint = (
                " (install reconciler's CRDs: `install_crds: true`, or kubectl apply deploy/base/crds)"
                if isinstance(exc, NoMatchError)
                else ""
            )
            (log.debug if repeat else log.warning)(
                "could not write the Environment object" + hint, environment=name, error=error
            )
            self._failing[name] = error
            return False
        if self._failing.pop(name, None) is not None:
            log.info("the Environment object is written again", environment=name)
        return True

    def failing(self, name: str) -> str:
        """Why the last write of ``name``'s object failed ("" when it succeeded)."""
        return self._failing.get(name, "")

    async def previous_change(self, name: str) -> dict[str, Any] | None:
        """The ``lastAppliedChange`` the object of ``name`` carries (written by an earlier leader or
        process), read with one listing of the namespace for every environment; None when there is none."""
        if self._previous is None:
            try:
                info = await self.client.resource(API_VERSION, KIND)
                listing = await self.client.request("GET", info.path(self.namespace))
            except NotFoundError:
                listing = {}
            self._previous = {}
            for item in listing.get("items") or []:
                change = (item.get("status") or {}).get("lastAppliedChange")
                if isinstance(change, dict) and change.get("revision"):
                    self._previous[str((item.get("metadata") or {}).get("name"))] = dict(change)
        return self._previous.get(name)

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """The ``status`` of every Environment object in the namespace, by name (one listing)."""
        info = await self.client.resource(API_VERSION, KIND)
        try:
            listing = await self.client.request("GET", info.path(self.namespace))
        except NotFoundError:
            return {}
        return {
            str((item.get("metadata") or {}).get("name")): dict(item.get("status") or {})
            for item in listing.get("items") or []
        }

    def forget(self) -> None:
        """Forget what is known about the objects (another leader may have written them since)."""
        self._known.clear()
        self._previous = None

    async def _ensure(self, name: str, spec: dict[str, Any]) -> _Known:
        known = self._known.get(name)
        if known is not None and known.spec == spec:
            return known
        if not self._namespace_ready:
            await self.client.ensure_namespace(self.namespace)
            self._namespace_ready = True
        live = await self._apply(name, "", {"spec": spec})
        metadata = live.get("metadata") or {}
        known = _Known(
            spec,
            str(metadata.get("uid") or ""),
            int(metadata.get("generation") or 0),
            dict(live.get("status") or {}),
        )
        self._known[name] = known
        return known

    async def _apply(self, name: str, subresource: str, content: dict[str, Any]) -> dict[str, Any]:
        info = await self.client.resource(API_VERSION, KIND)
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "reconciler"},
            },
            **content,
        }
        if subresource:
            body["metadata"] = {"name": name, "namespace": self.namespace}
        return await self.client.request(
            "PATCH",
            info.path(self.namespace, name) + subresource,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=body,
            content_type=APPLY_PATCH,
            subject=f"{KIND}/{self.namespace}/{name}",
        )


def changeset_summary(changeset: ChangeSet, limit: int = 50) -> dict[str, Any]:
    """The status API's view of a ChangeSet: counts, and the objects that were not unchanged (no diffs)."""
    notable = [e for e in changeset.entries if e.action != Action.UNCHANGED]
    return {
        "summary": changeset.summary(),
        "counts": changeset.counts(),
        "objects": [
            {"object": str(e.key), "action": e.action.value, **({"message": e.message} if e.message else {})}
            for e in notable[:limit]
        ],
        "omitted": max(0, len(notable) - limit),
    }
