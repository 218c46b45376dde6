"""Write fencing against the local control plane: under an environment's claim, every request that may
write checks the claim first; once the claim is released or taken, the next write raises before it is
sent (the audit log shows nothing more), reads still work, and tasks started inside a fenced block that
outlive it (watches, Event senders) carry no fence."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from reconciler.kube import KubeClient, fencing
from reconciler.sharding import ClaimLost, Claims, ClaimsConfig
from reconciler.sharding.leases import lease_path
from tests.support import AuditLog, config_map

pytestmark = pytest.mark.cluster


async def _lost(fence: fencing.WriteFence) -> None:
    """Until ``fence`` stops holding (the renewal loop noticed)."""
    while True:
        try:
            fence.ensure()
        except ClaimLost:
            return
        await asyncio.sleep(0.05)


def claims(kube: KubeClient, namespace: str, identity: str) -> Claims:
    config = ClaimsConfig(
        namespace=namespace,
        identity=identity,
        shard_group=namespace[-20:],
        lease_duration=3.0,
        renew_interval=0.5,
        safety_margin=1.0,
        watch=False,
    )
    return Claims(kube, config)


async def test_a_write_after_the_claim_is_gone_raises_before_it_is_sent(
    kube: KubeClient, namespace: str, audit: AuditLog
) -> None:
    mine = claims(kube, namespace, "replica-a")
    runner = asyncio.create_task(mine.run())
    try:
        start = audit.mark()
        fence = await mine.acquire("shop")
        with fencing.fenced(fence):
            await kube.apply(config_map("first", namespace, note="1"))
        # another replica takes the claim (as if ours had expired unseen): our next renewal finds it
        # foreign and gives it up
        path = lease_path(namespace, mine.config.lease_name("shop"))
        lease = await kube.request("GET", path)
        lease["spec"]["holderIdentity"] = "replica-b"
        await kube.request("PUT", path, body=lease)
        await asyncio.wait_for(_lost(fence), timeout=5)
        with fencing.fenced(fence):
            with pytest.raises(ClaimLost):
                await kube.apply(config_map("second", namespace, note="2"))
            with pytest.raises(ClaimLost):
                await kube.request("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/first")
            # reads are not writes: still answered
            assert (await kube.get("v1", "ConfigMap", namespace, "first")) is not None
        writes = await audit.writes(kube, start, resources={"configmaps"})
        assert sum(writes.values()) == 1, writes  # "first" only: nothing after the claim was gone
        # outside the block no fence applies
        await kube.apply(config_map("third", namespace, note="3"))
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_tasks_started_in_a_fenced_block_can_be_unfenced(kube: KubeClient, namespace: str) -> None:
    """A long-lived task created with ``fencing.unfenced()`` inside a fenced block keeps writing after
    the block's claim is gone; one created plainly inherits the fence and is stopped by it."""
    mine = claims(kube, namespace, "replica-a")
    fence = await mine.acquire("shop")
    go = asyncio.Event()

    async def write_later(name: str) -> None:
        await go.wait()
        await kube.apply(config_map(name, namespace, note="x"))

    with fencing.fenced(fence):
        detached = asyncio.create_task(write_later("detached"), context=fencing.unfenced())
        inherited = asyncio.create_task(write_later("inherited"))
    await mine.release("shop")
    go.set()
    await detached
    with pytest.raises(ClaimLost):
        await inherited
    assert await kube.get("v1", "ConfigMap", namespace, "detached") is not None
    assert await kube.get("v1", "ConfigMap", namespace, "inherited") is None
