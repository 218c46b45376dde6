"""Which member owns which environment: rendezvous (highest-random-weight) hashing with bounded loads,
pure.

Every member of the shard group computes the same answer from the same inputs: each member's
preference for a key is ``weight(member, key)``, a keyed BLAKE2b digest (never Python's ``hash()``, which
is salted per process); ties, which need a 64-bit collision, go to the greater member name, so the order
in which members are listed never matters.

Plain rendezvous hashing (``owner``; ``assign(..., load_factor=None)``) gives each key to its favourite
member. It moves the least possible (a joining member takes only the keys it now wins, about 1/N; a
leaving member's keys alone move), but its balance is a coin toss at small sizes: 60 environments over
3 members end up with a busiest/least busy ratio above 1.5 in about 43% of random name sets. So
``assign`` bounds the load (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam
2018): no member gets more than ``ceil(load_factor * keys / members)``; keys are placed in a fixed order
(by a hash of the key alone, larger groups first), each with its favourite member that still has room.
With the default 1.1, 60 over 3 is never worse than 22/16, and a join or a leave moves about 1.1/N
instead of 1/N (benchmarks/assignment.py: 2.1% instead of 1.96% at 10,000 x 50).

Bounded loads make the answer depend on *all* keys: every member must pass the same keys (the
configured environments) as well as the same members.

Environments can be kept together: ``group`` maps an environment to a group key and every environment
of a group goes to one member, chosen by the group key. ``dependency_groups`` builds such a mapping from
``depends_on``, so one replica syncs a whole chain. An environment without a group is its own group
(its key is its name), so grouping one chain leaves the others' preferences unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

DEFAULT_LOAD_FACTOR = 1.1
_DIGEST_BYTES = 8
_MAX_KEY_BYTES = 64  # BLAKE2b's key length limit


def _member_key(member: str) -> bytes:
    """The BLAKE2b key for ``member``: its UTF-8 bytes, or their digest when longer than a key may be."""
    raw = member.encode()
    if len(raw) <= _MAX_KEY_BYTES and raw:
        return raw
    return hashlib.blake2b(raw, digest_size=32, person=b"rendezvous-mem").digest()


def weight(member: str, key: str) -> int:
    """The rendezvous weight of ``key`` on ``member``: a 64-bit BLAKE2b digest of the key, keyed by the
    member. The same on every machine, Python version and process."""
    digest = hashlib.blake2b(key.encode(), digest_size=_DIGEST_BYTES, key=_member_key(member)).digest()
    return int.from_bytes(digest, "big")


def ranking(key: str, members: Sequence[str]) -> list[str]:
    """``members`` in ``key``'s order of preference (highest weight first; a tie: the greater name)."""
    return sorted(set(members), key=lambda member: (weight(member, key), member), reverse=True)


def owner(key: str, members: Sequence[str]) -> str | None:
    """``key``'s favourite member (plain rendezvous hashing); None without members. ``assign`` gives a
    key to another member when its favourite is full: ask ``assign`` who owns what."""
    if not members:
        return None
    return max(members, key=lambda member: (weight(member, key), member))


class _Ranker:
    """Weights of byte strings over a fixed set of members, each member's BLAKE2b key derived once."""

    def __init__(self, members: list[str]) -> None:
        self.hashers = [
            (hashlib.blake2b(digest_size=_DIGEST_BYTES, key=_member_key(member)), member)
            for member in members
        ]

    def weights(self, key: str) -> list[tuple[int, str]]:
        """(weight, member) for every member."""
        data = key.encode()
        weights = []
        for base, member in self.hashers:
            hasher = base.copy()
            hasher.update(data)
            weights.append((int.from_bytes(hasher.digest(), "big"), member))
        return weights

    def favourite(self, key: str) -> str:
        """``key``'s favourite member."""
        return max(self.weights(key))[1]


def _placement_order(groups: dict[str, list[str]]) -> list[str]:
    """Groups in the order they are placed: larger first, then by a hash of the group key alone (so the
    order does not change with the members)."""

    def order(name: str) -> tuple[int, bytes]:
        return (-len(groups[name]), hashlib.blake2b(name.encode(), digest_size=_DIGEST_BYTES).digest())

    return sorted(groups, key=order)


def _bounded(ranker: _Ranker, groups: dict[str, list[str]], capacity: int) -> dict[str, str]:
    """Each group to its favourite member with room for it; when none has room (a group larger than
    what is left anywhere), to the least loaded, preferring favourites."""
    load = {member: 0 for _, member in ranker.hashers}
    chosen: dict[str, str] = {}
    for name in _placement_order(groups):
        size = len(groups[name])
        weights = ranker.weights(name)
        member = max(weights)[1]
        if load[member] + size > capacity:  # the favourite is full: the next with room, or the emptiest
            ranked = [candidate for _, candidate in sorted(weights, reverse=True)]
            fits = [candidate for candidate in ranked if load[candidate] + size <= capacity]
            member = fits[0] if fits else min(ranked, key=lambda candidate: load[candidate])
        load[member] += size
        chosen[name] = member
    return chosen


def assign(
    keys: Iterable[str],
    members: Sequence[str],
    group: Mapping[str, str] | None = None,
    *,
    load_factor: float | None = DEFAULT_LOAD_FACTOR,
) -> dict[str, str]:
    """Every key's owner among ``members``: ``{key: member}``; empty without members.

    ``group`` maps a key to the key it is placed by (default: itself), so keys of one group share an
    owner. ``load_factor`` bounds every member's share at ``ceil(load_factor * keys / members)`` (at
    least 1.0; None: plain rendezvous hashing, every group to its favourite member)."""
    if load_factor is not None and load_factor < 1.0:
        raise ValueError(f"load_factor must be at least 1.0 (or None), got {load_factor}")
    unique = sorted(set(members))
    if not unique:
        return {}
    groups_of = group or {}
    groups: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        groups.setdefault(groups_of.get(key, key), []).append(key)
    ranker = _Ranker(unique)
    if load_factor is None:
        chosen = {name: ranker.favourite(name) for name in groups}
    else:
        total = sum(len(keys_of) for keys_of in groups.values())
        share = round(load_factor * total / len(unique), 6)  # 1.1 * 60 / 3 is 22.000000000000004
        chosen = _bounded(ranker, groups, math.ceil(share))
    return {key: chosen[name] for name, keys_of in groups.items() for key in keys_of}


def dependency_groups(depends_on: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """A ``group`` for ``assign`` that keeps every ``depends_on`` chain together: each environment named
    (as a key or a dependency) maps to the least name of its connected component. An environment with
    no dependencies and no dependents maps to itself."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]  # path halving
            name = parent[name]
        return name

    for environment, dependencies in depends_on.items():
        for dependency in [environment, *dependencies]:
            first, second = root(environment), root(dependency)
            if first != second:
                parent[max(first, second)] = min(first, second)
    return {name: root(name) for name in list(parent)}


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """The keys whose owner differs between two assignments (a key present in only one counts)."""
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
