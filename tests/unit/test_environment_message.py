"""What an environment's status says after syncs that changed nothing: the last change stays visible
(``lastAppliedChange``) and the message says "unchanged since" its revision, never a no-op's "9
unchanged" alone, nor an old revision's message beside a new revision."""

from __future__ import annotations

from reconciler.daemon import EnvironmentState
from reconciler.objects import Action, ChangeSet, ChangeSetEntry, ObjectKey
from reconciler.settings import EnvironmentConfig
from reconciler.sync import SyncResult

OLD, NEW = "a" * 40, "b" * 40


def result(revision: str, *actions: Action, condition: str = "Ready") -> SyncResult:
    changes = ChangeSet()
    for index, action in enumerate(actions):
        changes.add(ChangeSetEntry(ObjectKey("", "ConfigMap", "shop", f"cm-{index}"), action))
    outcome = SyncResult("shop", revision, changes, synced=True, condition=condition)
    outcome.message = f"applied revision {revision}: {changes.summary()}"
    return outcome


def state(last: SyncResult, revision: str, last_change: str = "") -> EnvironmentState:
    env = EnvironmentState(EnvironmentConfig("shop", "apps/shop", "local"))
    env.result, env.revision = last, revision
    if last_change:
        env.last_change = {"revision": last_change, "time": "T", "summary": "1 configured, 1 unchanged"}
    return env


def test_a_sync_that_changed_something_says_what_it_applied() -> None:
    """The sync's own message while it is the latest word."""
    assert state(result(NEW, Action.CONFIGURED, Action.UNCHANGED), NEW).message() == (
        f"applied revision {NEW}: 1 configured, 1 unchanged"
    )


def test_a_no_op_sync_says_unchanged_since_the_last_change() -> None:
    """A resync after a promotion: unchanged since the revision that changed the Deployment."""
    env = state(result(NEW, Action.UNCHANGED, Action.UNCHANGED), NEW, last_change=NEW)
    assert env.message() == f"revision {NEW}: 2 objects unchanged since {NEW}"
    assert env.status()["lastAppliedChange"]["revision"] == NEW


def test_a_new_revision_with_the_same_inputs_says_unchanged_since_the_old_one() -> None:
    """The commit did not touch this environment: the new revision, unchanged since the old one (the
    old sync's message named only the old revision beside the new one)."""
    env = state(result(OLD, Action.CONFIGURED, Action.UNCHANGED), NEW, last_change=OLD)
    assert env.message() == f"revision {NEW}: 2 objects unchanged since {OLD}"
    assert env.status()["message"] == env.message()


def test_failures_keep_their_own_message() -> None:
    """A failing sync's message is the failure, whatever changed before."""
    failed = result(NEW, Action.FAILED, condition="Stalled")
    failed.message = "apply failed: ConfigMap/shop/cm-0: forbidden"
    assert state(failed, NEW, last_change=OLD).message() == "apply failed: ConfigMap/shop/cm-0: forbidden"
