"""The verified-commit gate between a fetch and the syncs it triggers: with ``repository.verify``
configured, a fetched head is synced only when its commit is signed by an allowed signer
(``reconciler.source.verify``); otherwise the daemon keeps the last verified revision, applies and
prunes nothing, and says why. Verdicts are cached per commit (a commit's signature never changes)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

from reconciler.source.verify import Verdict, VerifyConfig, verify_commit

UNVERIFIED = "UnverifiedCommit"  # the environments' condition reason while the head is refused


class CommitGate:
    """Decides whether a fetched commit may be synced."""

    def __init__(
        self, config: VerifyConfig, repository: Path, gnupg_home: Path, cache_size: int = 256
    ) -> None:
        self.config = config
        self.repository = repository
        self.gnupg_home = gnupg_home
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._cache_size = cache_size

    @property
    def enabled(self) -> bool:
        """True when commits must be verified."""
        return self.config.enabled

    async def check(self, sha: str) -> Verdict:
        """The verdict on commit ``sha`` (always ok when verification is not configured)."""
        if not self.enabled:
            return Verdict(True)
        cached = self._verdicts.get(sha)
        if cached is not None:
            return cached
        verdict = await asyncio.to_thread(verify_commit, self.repository, sha, self.config, self.gnupg_home)
        self._verdicts[sha] = verdict
        while len(self._verdicts) > self._cache_size:
            self._verdicts.popitem(last=False)
        return verdict
