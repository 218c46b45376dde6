"""Scale-out by sharding environments over the daemon's replicas, coordinated through Kubernetes Leases.

The package owns the three pieces every replica needs to share the work without a coordinator:

* ``assignment``: which member owns which environment, by rendezvous (highest-random-weight) hashing
  with bounded loads: pure, deterministic on every replica, balanced, and moving about 1/N of the
  environments when a member joins or leaves;
* ``membership``: who the members are; every replica holds and renews a Lease of its own, and watches
  the others' (expiry judged by this replica's own clock, as client-go's leader election does);
* ``claims``: fencing; before it writes to an environment's cluster the owner holds a per-environment
  Lease that no other replica may take until it is released or expired, and stops writing before a
  successor may legally take over;
* ``leases``: what membership and claims share: Lease names, labels, bodies, the sighting clock and the
  list-and-watch loop.

Assignment decides who *should* work on an environment; only a claim allows anyone to *write*. Two
replicas that briefly disagree about the members (one saw a join the other has not yet) can both
believe they own an environment, but never both hold its claim. docs/scaling.md describes the design.
"""

from reconciler.sharding.assignment import (
    DEFAULT_LOAD_FACTOR,
    assign,
    dependency_groups,
    moved,
    owner,
    ranking,
    weight,
)
from reconciler.sharding.claims import (
    Claim,
    ClaimLost,
    Claims,
    ClaimsConfig,
    ClaimUnavailable,
    Fence,
)
from reconciler.sharding.membership import Membership, MembershipConfig

__all__ = [
    "DEFAULT_LOAD_FACTOR",
    "Claim",
    "ClaimLost",
    "ClaimUnavailable",
    "Claims",
    "ClaimsConfig",
    "Fence",
    "Membership",
    "MembershipConfig",
    "assign",
    "dependency_groups",
    "moved",
    "owner",
    "ranking",
    "weight",
]
