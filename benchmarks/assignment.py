"""Pure benchmark of sharding's assignment: rendezvous hashing of environments over replicas.

    .venv/bin/python -m benchmarks.assignment [--environments 10000] [--replicas 50] [--repeat 5]

No cluster. Prints, for plain rendezvous hashing and for bounded loads (load factors 1.25, 1.1: the
default, and 1.0): the time to assign every environment (what each replica computes on every membership
change), the spread of environments per replica, and the fraction that moves when a replica joins, when
one leaves and when half leave (with the moves between two replicas that both stayed: "needless"); the
same with ``depends_on`` chains kept together; and the Lease writes per second the default timings cost the API server at that
size (``reconciler.sharding`` defaults; docs/scaling.md explains the formula). Asserts only sanity.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable

from reconciler.sharding import (
    DEFAULT_LOAD_FACTOR,
    ClaimsConfig,
    MembershipConfig,
    assign,
    dependency_groups,
    moved,
    owner,
)


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def spread(assignment: dict[str, str], members: list[str]) -> str:
    counts = Counter(assignment.values())
    per = [counts.get(member, 0) for member in members]
    mean = statistics.mean(per)
    return (
        f"min {min(per)}, max {max(per)}, mean {mean:.1f}, stdev {statistics.pstdev(per):.1f} "
        f"(max/min {max(per) / max(1, min(per)):.2f}, max/mean {max(per) / mean:.2f})"
    )


def churn(
    label: str, before: dict[str, str], after: dict[str, str], expected: float, allowed: set[str]
) -> None:
    changed = moved(before, after)
    targets = Counter(after[key] for key in changed)
    sources = Counter(before[key] for key in changed)
    needless = sum(1 for key in changed if after[key] not in allowed and before[key] not in allowed)
    print(
        f"  {label:<24} moved {len(changed):>6} of {len(before)} = {len(changed) / len(before):6.2%} "
        f"(ideal {expected:6.2%}); from {len(sources)} replica(s) to {len(targets)}; needless: {needless}"
    )
    assert len(changed) >= expected * len(before) * 0.5  # sanity: the leavers' keys at least


def lease_writes(environments: int, replicas: int, workers: int) -> None:
    member = MembershipConfig(namespace="n", identity="i")
    claim = ClaimsConfig(namespace="n", identity="i")
    members_per_s = replicas / member.renew_interval
    held_always = environments / claim.renew_interval
    in_flight = replicas * workers
    held_in_sync = in_flight / claim.renew_interval
    print(
        f"Lease writes per second at the defaults (member renew {member.renew_interval:g} s, claim renew "
        f"{claim.renew_interval:g} s, lease {claim.lease_duration:g} s):"
    )
    print(f"  member renewals        {replicas} / {member.renew_interval:g} = {members_per_s:8.1f} /s")
    print(f"  claims held always     {environments} / {claim.renew_interval:g} = {held_always:8.1f} /s")
    print(
        f"  claims held per sync   {in_flight} syncs in flight ({replicas} x {workers} workers) / "
        f"{claim.renew_interval:g} = {held_in_sync:8.1f} /s, + 2 writes per sync (acquire, release)"
    )
    print(
        f"  watch events sent      members: {members_per_s * replicas:8.0f} /s "
        f"(every renewal to every replica); claims held always: {held_always * replicas:8.0f} /s"
    )


def figures(envs: list[str], members: list[str], load_factor: float | None, repeat: int) -> None:
    """Time, spread and churn of one load factor."""
    label = "plain rendezvous" if load_factor is None else f"load factor {load_factor:g}"
    seconds = best_of(repeat, lambda: assign(envs, members, load_factor=load_factor))
    base = assign(envs, members, load_factor=load_factor)
    assert set(base) == set(envs)
    assert set(base.values()) == set(members)
    print(
        f"{label}: assign() {seconds * 1000:.0f} ms (best of {repeat}); environments per replica: {spread(base, members)}"
    )
    newcomer = "reconciler-6d5f8b7c9-new"
    joined = [*members, newcomer]
    churn("a replica joins", base, assign(envs, joined, load_factor=load_factor), 1 / len(joined), {newcomer})
    leaver = members[len(members) // 2]
    rest = [member for member in members if member != leaver]
    churn("one replica leaves", base, assign(envs, rest, load_factor=load_factor), 1 / len(members), {leaver})
    half = members[: len(members) // 2]
    after = assign(envs, half, load_factor=load_factor)
    churn("half the replicas leave", base, after, 1 - len(half) / len(members), set(members) - set(half))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--environments", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=4, help="concurrent syncs per replica (settings.workers)"
    )
    options = parser.parse_args()
    envs = [f"team-{index // 20:03d}-env-{index % 20:02d}" for index in range(options.environments)]
    members = [f"reconciler-6d5f8b7c9-{index:05x}" for index in range(options.replicas)]
    print(f"{len(envs)} environments x {len(members)} replicas")
    sample = envs[:1000]
    per_key = best_of(options.repeat, lambda: [owner(key, members) for key in sample]) / len(sample)
    print(f"owner() of one key: {per_key * 1e6:.1f} µs ({len(members)} weights)")
    for load_factor in (None, 1.25, DEFAULT_LOAD_FACTOR, 1.0):
        figures(envs, members, load_factor, options.repeat)

    # depends_on chains: every team's environments 01..19 depend on its 00 (a CRDs/namespaces base)
    depends_on = {env: [env[:-2] + "00"] for env in envs if not env.endswith("-00")}
    groups = dependency_groups(depends_on)
    grouped_seconds = best_of(options.repeat, lambda: assign(envs, members, groups))
    grouped = assign(envs, members, groups)
    print(
        f"depends_on chains of 20 kept together ({len(set(groups.values()))} groups, default load factor): "
        f"assign() {grouped_seconds * 1000:.0f} ms; environments per replica: {spread(grouped, members)}"
    )
    newcomer = "reconciler-6d5f8b7c9-new"
    churn(
        "a replica joins",
        grouped,
        assign(envs, [*members, newcomer], groups),
        1 / (len(members) + 1),
        {newcomer},
    )

    small = assign(envs[:60], members[:3])
    print(
        f"60 environments x 3 replicas (the issue's test), default load factor: {spread(small, members[:3])}"
    )
    lease_writes(len(envs), len(members), options.workers)


if __name__ == "__main__":
    main()
