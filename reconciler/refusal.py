"""``Refusal``: a request turned away with an HTTP status and a short reason, the one base of the
errors the HTTP surface answers with (webhooks, signed promotion calls, promotion decisions)."""

from __future__ import annotations


class Refusal(Exception):
    """A request that must be refused: carries the HTTP status and a short, safe-to-show reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
