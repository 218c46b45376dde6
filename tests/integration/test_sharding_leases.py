"""Member Leases and per-environment claims against the local control plane: replicas see each other
join, expire and leave; a claim is held by at most one replica, taken over only after a release or an
expiry, and its holder stops counting it held before anyone else may take it. Lease durations of 1-3 s
keep the file short; every wait is a deadline on a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from reconciler.kube import KubeClient
from reconciler.sharding import (
    ClaimLost,
    Claims,
    ClaimsConfig,
    ClaimUnavailable,
    Membership,
    MembershipConfig,
)
from reconciler.sharding.leases import lease_path
from tests.helpers import eventually

pytestmark = pytest.mark.cluster


@contextlib.asynccontextmanager
async def running(coroutine: Awaitable[None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run a loop for the block, cancelled (and awaited) at its end."""
    task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
    task.set_name(name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop(task: asyncio.Task[None]) -> None:
    """Stop a loop as SIGKILL would stop its process: no release, nothing more written."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def member(
    kube: KubeClient,
    namespace: str,
    identity: str,
    seen: list[tuple[str, ...]] | None = None,
    *,
    group: str = "default",
) -> Membership:
    """A membership with a 2 s lease, renewed every 0.3 s."""
    config = MembershipConfig(
        namespace=namespace,
        identity=identity,
        shard_group=group,
        lease_duration=2.0,
        renew_deadline=1.5,
        renew_interval=0.3,
    )
    return Membership(kube, config, on_change=seen.append if seen is not None else None)


def claims(kube: KubeClient, namespace: str, identity: str) -> Claims:
    """Claims with a 2 s lease, renewed every 0.3 s, counted held for 1.5 s after a renewal."""
    config = ClaimsConfig(
        namespace=namespace, identity=identity, lease_duration=2.0, renew_interval=0.3, safety_margin=0.5
    )
    return Claims(kube, config)


def becomes(probe: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return probe()

    return check


# -- membership ------------------------------------------------------------------------------------
async def test_two_members_see_each_other_and_a_release_at_once(kube: KubeClient, namespace: str) -> None:
    seen: list[tuple[str, ...]] = []
    first = member(kube, namespace, "Replica_A.example", seen)  # sanitized to a DNS name, kept as holder
    second = member(kube, namespace, "replica-b")
    async with running(first.run(), "member-a"), running(second.run(), "member-b"):
        both = ("Replica_A.example", "replica-b")
        await eventually(becomes(lambda: first.members() == both and second.members() == both), timeout=15)
        assert first.ready.is_set()
        await eventually(becomes(lambda: seen[-1:] == [both]), timeout=2, what="on_change")
        lease = await kube.request("GET", lease_path(namespace, first.config.lease_name))
        assert lease["spec"]["holderIdentity"] == "Replica_A.example"
        assert lease["metadata"]["labels"]["reconciler.dev/member"] == "true"

        await second.release()
        released = time.monotonic()
        await eventually(becomes(lambda: first.members() == ("Replica_A.example",)), timeout=5, interval=0.02)
        assert time.monotonic() - released < 1.0, "a release is seen through the watch, not by expiry"
        await eventually(becomes(lambda: seen[-1:] == [("Replica_A.example",)]), timeout=2, what="on_change")
        assert second.members() == ("Replica_A.example",)  # the released replica no longer counts itself


async def test_an_unrenewed_member_expires_and_its_lease_is_collected(
    kube: KubeClient, namespace: str
) -> None:
    first = member(kube, namespace, "replica-a")
    second = member(kube, namespace, "replica-b")
    other_group = member(kube, namespace, "replica-x", group="other")
    async with running(first.run(), "member-a"), running(other_group.run(), "member-x"):
        async with running(second.run(), "member-b") as task:
            await eventually(becomes(lambda: first.members() == ("replica-a", "replica-b")), timeout=15)
            await other_group.ready.wait()
            await stop(task)  # as if SIGKILLed: the Lease stays, unrenewed
            stopped = time.monotonic()
        await eventually(becomes(lambda: first.members() == ("replica-a",)), timeout=10, interval=0.05)
        waited = time.monotonic() - stopped
        assert 1.0 < waited < 4.0, f"expired after {waited:.1f} s (lease duration 2 s)"
        assert other_group.members() == ("replica-x",), "another shard group is never counted"

        async def collected() -> bool:
            try:
                await kube.request("GET", lease_path(namespace, second.config.lease_name))
            except Exception:
                return True
            return False

        await eventually(collected, timeout=10, what="the departed member's Lease deleted")


# -- claims ----------------------------------------------------------------------------------------
async def test_a_held_claim_is_not_taken_and_a_released_one_is_at_once(
    kube: KubeClient, namespace: str
) -> None:
    owner, other = claims(kube, namespace, "replica-a"), claims(kube, namespace, "replica-b")
    released: list[str] = []
    other.on_released = released.append
    async with running(owner.run(), "claims-a"), running(other.run(), "claims-b"):
        fence = await owner.acquire("shop")
        assert fence.held
        assert owner.held() == ["shop"]
        # renewed in the background: a full lease duration and more later it is still held, never taken
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            with pytest.raises(ClaimUnavailable) as refused:
                await other.acquire("shop")
            assert refused.value.holder == "replica-a"
            fence.ensure()
            await asyncio.sleep(0.2)
        lease = await kube.request("GET", lease_path(namespace, "reconciler-env-shop"))
        assert lease["metadata"]["annotations"]["reconciler.dev/environment"] == "shop"

        await owner.release("shop")
        with pytest.raises(ClaimLost):
            fence.ensure()
        await eventually(becomes(lambda: released == ["shop"]), timeout=5, what="on_released")
        taken = await other.acquire("shop")  # no waiting: the holder was emptied
        assert taken.held
        assert not fence.held


async def test_an_expired_claim_is_taken_only_after_its_holder_stopped(
    kube: KubeClient, namespace: str
) -> None:
    """The holder cannot renew (its renewal loop is gone, as when cut off from the API server):
    ``ensure()`` raises once its deadline passes, before the other replica may take the claim."""
    holder, successor = claims(kube, namespace, "replica-a"), claims(kube, namespace, "replica-b")
    fence = await holder.acquire("shop")  # holder.run() never started: nothing renews it
    acquired = time.monotonic()
    taken: list[tuple[float, bool]] = []

    async def successor_takes() -> bool:
        try:
            await successor.acquire("shop")
        except ClaimUnavailable:
            return False
        taken.append((time.monotonic(), fence.held))
        return True

    async with running(successor.run(), "claims-b"):
        await eventually(successor_takes, timeout=10, interval=0.05, what="the claim taken over")
    at, old_holder_still_held = taken[0]
    assert not old_holder_still_held, "the successor took the claim while the old holder counted it held"
    assert at - acquired >= 2.0, "taken no earlier than a full lease duration"
    with pytest.raises(ClaimLost, match="not renewed in time"):
        fence.ensure()
    assert not await holder.claim("shop").renew()


async def test_the_holder_stops_at_its_deadline(kube: KubeClient, namespace: str) -> None:
    """``ensure()`` passes until lease duration - safety margin after the last renewal, then raises."""
    holder = claims(kube, namespace, "replica-a")
    claim = holder.claim("shop")
    fence = await holder.acquire("shop")
    assert await claim.renew()
    renewed = time.monotonic()
    fence.ensure()
    await eventually(becomes(lambda: not fence.held), timeout=5, interval=0.02, what="the deadline")
    assert 1.4 <= time.monotonic() - renewed <= 2.0
    with pytest.raises(ClaimLost):
        fence.ensure()


async def test_a_race_between_two_acquirers_has_exactly_one_winner(kube: KubeClient, namespace: str) -> None:
    first, second = claims(kube, namespace, "replica-a"), claims(kube, namespace, "replica-b")

    async def attempt(replica: Claims, environment: str) -> str:
        try:
            await replica.acquire(environment)
        except ClaimUnavailable:
            return ""
        return replica.config.identity

    for round_ in range(5):
        environment = f"race-{round_}"
        # a create race (the Lease does not exist yet) ...
        winners = await asyncio.gather(attempt(first, environment), attempt(second, environment))
        assert winners.count("") == 1, winners
        winner = first if winners.count("replica-a") else second
        await winner.release(environment)
        # ... and an update race (both read it free, both write with the same resourceVersion)
        winners = await asyncio.gather(attempt(first, environment), attempt(second, environment))
        assert winners.count("") == 1, winners
        lease = await kube.request("GET", lease_path(namespace, f"reconciler-env-{environment}"))
        assert lease["spec"]["holderIdentity"] == next(w for w in winners if w)
        holders = [c for c in (first, second) if c.claim(environment).held]
        assert len(holders) == 1


async def test_a_lost_renewal_race_ends_the_term(kube: KubeClient, namespace: str) -> None:
    """Someone overwrites the holder (an operator, or a replica with a wrong clock): the holder's next
    renewal conflicts, reads the Lease again, and gives the claim up instead of writing over it."""
    replica = claims(kube, namespace, "replica-a")
    lost: list[str] = []
    replica.on_lost = lost.append
    async with running(replica.run(), "claims-a"):
        fence = await replica.acquire("shop")
        path = lease_path(namespace, "reconciler-env-shop")
        body = {"spec": {"holderIdentity": "intruder"}}
        await kube.request("PATCH", path, body=body, content_type="application/merge-patch+json")
        await eventually(becomes(lambda: lost == ["shop"]), timeout=5, what="on_lost")
        with pytest.raises(ClaimLost, match="taken by intruder"):
            fence.ensure()
        assert replica.held() == []
        lease = await kube.request("GET", path)
        assert lease["spec"]["holderIdentity"] == "intruder"


async def test_a_new_term_does_not_revive_an_old_fence(kube: KubeClient, namespace: str) -> None:
    replica = claims(kube, namespace, "replica-a")
    old = await replica.acquire("shop")
    await replica.release("shop")
    new = await replica.acquire("shop")
    assert new.held
    assert not old.held
    with pytest.raises(ClaimLost, match="new term"):
        old.ensure()
    await replica.release("shop")


async def test_hold_releases_at_the_end_of_the_block(kube: KubeClient, namespace: str) -> None:
    replica = claims(kube, namespace, "replica-a")
    async with replica.hold("shop") as fence:
        fence.ensure()
        assert replica.held() == ["shop"]
    assert not fence.held
    assert replica.held() == []
    lease = await kube.request("GET", lease_path(namespace, "reconciler-env-shop"))
    assert lease["spec"]["holderIdentity"] == ""


async def test_long_environment_names_get_hashed_lease_names(kube: KubeClient, namespace: str) -> None:
    replica = claims(kube, namespace, "replica-a")
    environment = "e" * 63
    fence = await replica.acquire(environment)
    name = replica.claim(environment).name
    assert len(name) <= 63
    assert name.startswith("reconciler-env-")
    lease = await kube.request("GET", lease_path(namespace, name))
    assert lease["metadata"]["annotations"]["reconciler.dev/environment"] == environment
    assert fence.held
