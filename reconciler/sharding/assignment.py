"""Which member owns which environment: rendezvous (highest-random-weight) hashing, pure.

Every member of the shard group computes the same answer from the same inputs: the owner of a key is
the member with the highest ``weight(member, key)``, a keyed BLAKE2b digest (never Python's ``hash()``,
which is salted per process). Ties, which need a 64-bit collision, go to the greater member name, so the
order in which members are listed never matters.

Rendezvous hashing moves the least possible: when a member joins, only the keys it now wins move, all
to it (about 1/N of them); when a member leaves, only its keys move, spread over the others. With 60
environments over 3 members the busiest member owns at most about 1.5 times what the least busy owns;
at thousands of environments the spread is a few percent (benchmarks/assignment.py).

Environments can be kept together: ``group`` maps an environment to a group key and every environment
of a group goes to the owner of that key. ``dependency_groups`` builds such a mapping from
``depends_on``, so one replica syncs a whole chain and can see its dependencies' readiness directly.
An environment without a group is its own group (its key is its name), so grouping one chain moves no
other environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

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


def owner(key: str, members: Sequence[str]) -> str | None:
    """The member owning ``key`` (the highest weight; a tie goes to the greater name); None without
    members."""
    if not members:
        return None
    return max(members, key=lambda member: (weight(member, key), member))


def assign(
    keys: Iterable[str], members: Sequence[str], group: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every key's owner among ``members``: ``{key: member}``; empty without members.

    ``group`` maps a key to the key it is hashed by (default: itself), so keys of one group share an
    owner. Each group is hashed once, and each member's BLAKE2b key is derived once."""
    unique = sorted(set(members))
    if not unique:
        return {}
    hashers = [
        (hashlib.blake2b(digest_size=_DIGEST_BYTES, key=_member_key(member)), member) for member in unique
    ]
    groups = group or {}
    owners: dict[str, str] = {}
    result: dict[str, str] = {}
    for key in keys:
        hashed = groups.get(key, key)
        chosen = owners.get(hashed)
        if chosen is None:
            data = hashed.encode()
            best = (-1, "")
            for base, member in hashers:
                hasher = base.copy()
                hasher.update(data)
                candidate = (int.from_bytes(hasher.digest(), "big"), member)
                best = max(best, candidate)
            chosen = owners[hashed] = best[1]
        result[key] = chosen
    return result


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
