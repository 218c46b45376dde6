"""Rendezvous assignment of environments to replicas: balance, minimal movement on a join and a leave,
determinism (across member order and processes), and keeping depends_on chains together."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from reconciler.sharding.assignment import assign, dependency_groups, moved, owner, weight

ENVIRONMENTS = [f"env-{index:03d}" for index in range(60)]
MEMBERS = ["reconciler-7d9f-a1", "reconciler-7d9f-b2", "reconciler-7d9f-c3"]


def test_sixty_environments_spread_over_three_members_within_one_and_a_half() -> None:
    counts = Counter(assign(ENVIRONMENTS, MEMBERS).values())
    assert set(counts) == set(MEMBERS)
    assert sum(counts.values()) == 60
    assert max(counts.values()) / min(counts.values()) <= 1.5, counts


def test_a_joining_member_takes_about_a_quarter_and_nothing_else_moves() -> None:
    keys = [f"env-{index}" for index in range(2000)]
    before = assign(keys, MEMBERS)
    after = assign(keys, [*MEMBERS, "reconciler-7d9f-d4"])
    changed = moved(before, after)
    assert {after[key] for key in changed} == {"reconciler-7d9f-d4"}
    assert 0.2 <= len(changed) / len(keys) <= 0.3, len(changed)
    # at the size the share is noisier (a binomial of 60 draws: 15 +- 3.4), still only to it
    before, after = assign(ENVIRONMENTS, MEMBERS), assign(ENVIRONMENTS, [*MEMBERS, "reconciler-7d9f-d4"])
    small = moved(before, after)
    assert {after[key] for key in small} == {"reconciler-7d9f-d4"}
    assert 0.1 <= len(small) / 60 <= 0.4, len(small)


def test_a_leaving_member_gives_up_only_its_own() -> None:
    before = assign(ENVIRONMENTS, MEMBERS)
    after = assign(ENVIRONMENTS, MEMBERS[:2])
    assert moved(before, after) == {key for key, member in before.items() if member == MEMBERS[2]}


def test_the_order_and_repetition_of_members_do_not_matter() -> None:
    expected = assign(ENVIRONMENTS, MEMBERS)
    assert assign(ENVIRONMENTS, list(reversed(MEMBERS))) == expected
    assert assign(ENVIRONMENTS, [*MEMBERS, MEMBERS[0]]) == expected
    assert all(owner(key, MEMBERS) == expected[key] for key in ENVIRONMENTS)


def test_weights_are_the_same_in_another_process() -> None:
    """Not Python's salted hash(): a fresh interpreter (another PYTHONHASHSEED) computes the same."""
    script = (
        "from reconciler.sharding.assignment import weight, owner;"
        "print(weight('replica-a', 'shop'), owner('shop', ['a', 'b', 'c']))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout.split()
    assert output == [str(weight("replica-a", "shop")), owner("shop", ["a", "b", "c"])]


def test_known_weight_pins_the_hash() -> None:
    """A change of the hash would reshuffle every environment during a rolling upgrade (old and new
    replicas disagreeing on every owner): pinned here."""
    assert weight("a", "shop") == 0x40F1D42471A2A992
    assert weight("reconciler-0", "env-001") == 0xDC6AF201E50EFA75


def test_long_member_names_hash_too() -> None:
    long_member = "r" * 300
    assert owner("shop", [long_member]) == long_member
    assert weight(long_member, "shop") != weight("r" * 299, "shop")


def test_no_members_no_owner() -> None:
    assert owner("shop", []) is None
    assert assign(ENVIRONMENTS, []) == {}


def test_a_group_keeps_a_dependency_chain_on_one_member() -> None:
    depends_on = {"apps": ["crds", "namespaces"], "namespaces": [], "crds": [], "web": ["apps"], "solo": []}
    groups = dependency_groups(depends_on)
    assert groups == {name: "apps" for name in ["apps", "crds", "namespaces", "web"]} | {"solo": "solo"}
    keys = [*depends_on, *ENVIRONMENTS]
    for members in (MEMBERS, MEMBERS[:2], [*MEMBERS, "d"]):
        result = assign(keys, members, groups)
        assert len({result[name] for name in ["apps", "crds", "namespaces", "web"]}) == 1
        assert result["apps"] == owner("apps", members)
        # environments outside any chain are placed as without grouping
        ungrouped = assign(keys, members)
        assert {key: result[key] for key in ENVIRONMENTS} == {key: ungrouped[key] for key in ENVIRONMENTS}


def test_dependency_groups_join_chains_through_shared_dependencies() -> None:
    groups = dependency_groups({"z": ["m"], "y": ["m"], "b": ["a"], "c": []})
    assert groups["z"] == groups["y"] == groups["m"] == "m"
    assert groups["b"] == groups["a"] == "a"
    assert groups["c"] == "c"


@pytest.mark.parametrize("members", [1, 2, 5, 10])
def test_every_environment_gets_exactly_one_member(members: int) -> None:
    names = [f"replica-{index}" for index in range(members)]
    result = assign(ENVIRONMENTS, names)
    assert set(result) == set(ENVIRONMENTS)
    assert set(result.values()) <= set(names)
