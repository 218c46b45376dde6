"""New revisions told to every replica: a webhook reaches one replica (whichever the Service picked),
which fetches at once and records the pushed commit on a shared Lease (``reconciler-revision-<group>``,
an annotation ``reconciler.dev/revision: <time>@<sha>``); every replica watches that Lease and fetches
when the annotation changes, so all of them learn of a push within a watch event, not a poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import structlog

from reconciler.kube.client import KubeClient
from reconciler.kube.errors import AlreadyExistsError, KubeError, NotFoundError
from reconciler.objects import Body
from reconciler.sharding import leases

log = structlog.get_logger(__name__)

ANNOUNCED = "reconciler.dev/revision"
ANNOUNCE_LABEL = "reconciler.dev/announcements"
MERGE_PATCH = "application/merge-patch+json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Announcements:
    """Announce revisions to the group and hear the others' (``on_revision(sha)``)."""

    def __init__(
        self, client: KubeClient, namespace: str, group: str, on_revision: Callable[[str], None]
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = leases.dns_name("reconciler-revision-", group)
        self.selector = f"{ANNOUNCE_LABEL}={leases.label_value(group)}"
        self.group = group
        self.on_revision = on_revision
        self._last = ""
        self._primed = False  # the first listing was seen (what it holds is old news)

    @property
    def path(self) -> str:
        """The shared Lease's API path."""
        return leases.lease_path(self.namespace, self.name)

    async def announce(self, sha: str) -> None:
        """Record ``sha`` (or "unknown") as the latest pushed revision, creating the Lease if needed."""
        value = f"{_now()}@{sha or 'unknown'}"
        self._last = value  # our own announcement is not fetched twice
        patch = {"metadata": {"annotations": {ANNOUNCED: value}}}
        try:
            await self.client.request("PATCH", self.path, body=patch, content_type=MERGE_PATCH)
        except NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {ANNOUNCE_LABEL: leases.label_value(self.group)},
                    "annotations": {ANNOUNCED: value},
                },
                "spec": {},
            }
            try:
                await self.client.request("POST", leases.collection_path(self.namespace), body=body)
            except AlreadyExistsError:
                await self.client.request("PATCH", self.path, body=patch, content_type=MERGE_PATCH)

    def _seen(self, lease: Body) -> None:
        value = ((lease.get("metadata") or {}).get("annotations") or {}).get(ANNOUNCED, "")
        if value and value != self._last:
            self._last = value
            if self._primed:  # the value found at start is old news: the first fetch covers it
                self.on_revision(value.split("@", 1)[-1])

    def _listed(self, items: list[Body]) -> None:
        for lease in items:
            self._seen(lease)
        self._primed = True  # a relist after a broken watch announces what changed meanwhile

    def _event(self, event: str, lease: Body) -> None:
        if event in ("ADDED", "MODIFIED"):
            self._seen(lease)

    async def run(self) -> None:
        """Watch the shared Lease for ever (relisting with backoff when the watch fails)."""
        try:
            await leases.follow(
                self.client, self.namespace, self.selector, on_list=self._listed, on_event=self._event
            )
        except KubeError as exc:  # pragma: no cover - follow retries for ever
            log.error("revision announcements stopped", error=str(exc))
            raise
