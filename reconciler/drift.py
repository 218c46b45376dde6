"""The drift loop guard: stop correcting an object that another field manager keeps changing back.

Correcting drift is right once; correcting the same object every few seconds forever means two
controllers fight over a field (the classic HPA-versus-Git loop). The guard counts corrections per
object in a sliding window; past the limit the object is reported as fighting and left alone until
the window has passed or the desired state changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.objects import Body, ObjectKey


@dataclass
class FightGuard:
    """Allows at most ``max_corrections`` per object within ``window`` seconds."""

    max_corrections: int = 5
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _history: dict[ObjectKey, deque[float]] = field(default_factory=dict)

    def allow(self, key: ObjectKey) -> bool:
        """Record a correction attempt; False when the object has been corrected too often recently."""
        now = self.clock()
        history = self._history.setdefault(key, deque())
        while history and now - history[0] > self.window:
            history.popleft()
        if len(history) >= self.max_corrections:
            return False
        history.append(now)
        return True

    def fighting(self, key: ObjectKey) -> bool:
        """True while the object is over the limit."""
        now = self.clock()
        history = self._history.get(key, deque())
        return len([t for t in history if now - t <= self.window]) >= self.max_corrections

    def reset(self, key: ObjectKey) -> None:
        """Forget an object's history (its desired state changed)."""
        self._history.pop(key, None)


def other_managers(live: Body, ours: str) -> list[str]:
    """Field managers other than ``ours`` that wrote the object, most recent first."""
    entries = [e for e in (live.get("metadata") or {}).get("managedFields") or [] if e.get("manager") != ours]
    entries.sort(key=lambda e: str(e.get("time") or ""), reverse=True)
    seen: list[str] = []
    for entry in entries:
        manager = str(entry.get("manager"))
        if manager not in seen:
            seen.append(manager)
    return seen
