"""Environment objects and Events against the local control plane: the CRD installs and is served, a
status is written once (a repeat writes nothing, counted by the API server's audit log), and a burst
of identical Events becomes one Event with a count while a loop of different ones is throttled."""

from __future__ import annotations

import pytest

from reconciler import crds
from reconciler.envstatus import EnvironmentObjects, next_conditions
from reconciler.events import Correlator, EventNote, EventRecorder
from reconciler.kube import KubeClient
from tests.support import AuditLog

pytestmark = pytest.mark.cluster


def status(sync: str, revision: str) -> dict[str, object]:
    return {
        "revision": revision,
        "appliedRevision": revision if sync == "Synced" else "",
        "sync": sync,
        "health": "Healthy",
        "conditions": next_conditions(
            [], "Ready" if sync == "Synced" else "Stalled", "Succeeded", "", "2026-01-01T00:00:00Z"
        ),
        "changes": {"created": 1},
    }


async def test_status_is_written_once_and_only_when_it_changes(
    kube: KubeClient, namespace: str, audit: AuditLog
) -> None:
    """First report: create + status; the same status again: no request at all; a new one: one patch."""
    assert "environments.reconciler.dev" in await crds.ensure(kube)
    objects = EnvironmentObjects(kube, namespace)
    spec = {"path": "apps/staging", "cluster": "local"}
    start = audit.mark()
    assert await objects.report("shop", spec, status("Synced", "a" * 40))
    first = await audit.writes(kube, start, resources={"environments"})
    assert first == {"patch": 1}, first  # the spec; the status patch is a subresource write

    start = audit.mark()
    assert await objects.report("shop", spec, status("Synced", "a" * 40))
    assert await audit.writes(kube, start, resources={"environments"}) == {}

    assert await objects.report("shop", spec, status("OutOfSync", "b" * 40))
    live = await kube.get("reconciler.dev/v1alpha1", "Environment", namespace, "shop")
    assert live is not None
    assert live["status"]["sync"] == "OutOfSync"
    assert live["status"]["revision"] == ""
    assert live["status"]["lastAttemptedRevision"] == "b" * 40
    assert objects.involved("shop").uid == live["metadata"]["uid"]


async def test_repeated_events_are_counted_and_a_loop_is_throttled(kube: KubeClient, namespace: str) -> None:
    """Five identical notes: one Event, count 5. Forty different ones: only the burst is created."""
    await crds.ensure(kube)
    objects = EnvironmentObjects(kube, namespace)
    await objects.report("loop", {"path": "apps/loop"}, status("Synced", "c" * 40))
    outcomes: list[str] = []
    recorder = EventRecorder(
        instance="test",
        correlator=Correlator(burst=10, refill=3600),
        on_outcome=lambda _r, o: outcomes.append(o),
    )
    recorder.start()
    try:
        for _ in range(5):
            recorder.record(
                kube, objects.involved("loop"), EventNote("Warning", "RenderFailed", "same failure")
            )
        for i in range(40):
            recorder.record(
                kube, objects.involved("loop"), EventNote("Normal", "DriftCorrected", f"change {i}")
            )
        await recorder.flush(timeout=20)
    finally:
        await recorder.close()
    events = (await kube.request("GET", f"/api/v1/namespaces/{namespace}/events"))["items"]
    mine = [e for e in events if e["involvedObject"].get("name") == "loop"]
    failures = [e for e in mine if e["reason"] == "RenderFailed"]
    assert [(e["count"], e["type"], e["involvedObject"]["uid"]) for e in failures] == [
        (5, "Warning", objects.involved("loop").uid)
    ]
    assert len([e for e in mine if e["reason"] == "DriftCorrected"]) == 5  # the burst (10) minus the 5 above
    assert outcomes.count("throttled") == 35
    assert outcomes.count("aggregated") == 4
    assert "failed" not in outcomes
