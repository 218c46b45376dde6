"""With sharding, an environment that moved to another replica is forgotten by this one's drift
corrector: a watch event about its objects (a late one from the new owner's writes, or anyone's edit)
never makes this replica put back the older revision it last synced."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from reconciler.drift import FightGuard
from reconciler.objects import Manifest
from reconciler.sync.correction import DriftCorrector


def config_map(note: str) -> Manifest:
    return Manifest(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "shop"},
            "data": {"note": note},
        }
    )


async def test_a_forgotten_environment_is_never_corrected_from_what_it_wanted_before() -> None:
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
    corrector = DriftCorrector(None, None, locks.__getitem__, FightGuard())  # type: ignore[arg-type]
    old = config_map("revision-1")
    corrector.remember("shop", [old], "1" * 40)
    drifted = {**old.body, "data": {"note": "revision-2, written by the new owner"}}

    corrector.forget("shop")
    corrector.on_live_event("MODIFIED", old.key, drifted)
    assert not corrector._tasks  # nothing scheduled: no correction from stale knowledge

    corrector.remember("shop", [old], "1" * 40)  # synced here again: corrections resume
    corrector.on_live_event("MODIFIED", old.key, drifted)
    assert len(corrector._tasks) == 1
    for task in list(corrector._tasks):
        task.cancel()
