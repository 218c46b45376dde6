"""Leader election settings: client-go's lease, renew deadline and retry period, and a replica identity
that survives a restart (the pod name)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from reconciler.settings import ConfigError, parse
from tests.unit.test_settings import config


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "github-secret").write_text("a-long-random-webhook-secret\n")
    return tmp_path


def leader(base: Path, environ: dict[str, str] | None = None, **fields: Any) -> Any:
    return parse(config(leader_election=fields), base, environ=environ or {}).leader_election


def test_defaults_take_over_in_about_eight_seconds_and_stop_leading_before(base: Path) -> None:
    """An 8 s lease renewed every second; a leader that cannot renew for 5 s stops leading, 3 s before
    a follower may take over."""
    settings = leader(base)
    assert (settings.lease_duration, settings.renew_deadline, settings.renew_interval) == (8.0, 5.0, 1.0)


def test_older_configurations_stay_valid_with_a_renew_deadline_derived_from_the_lease(base: Path) -> None:
    """Configurations written before renew_deadline existed keep working (client-go's 10 of 15)."""
    short = leader(base, lease_duration=4, renew_interval=0.5)
    assert short.renew_interval < short.renew_deadline < short.lease_duration
    assert leader(base, lease_duration=15).renew_deadline == pytest.approx(15 * 5 / 8)


@pytest.mark.parametrize(
    "fields",
    [{"lease_duration": 8, "renew_deadline": 8}, {"renew_interval": 2, "renew_deadline": 2}],
)
def test_the_renew_deadline_lies_between_the_retry_period_and_the_lease(
    base: Path, fields: dict[str, Any]
) -> None:
    """A deadline not shorter than the lease would let two replicas lead at once."""
    with pytest.raises(ConfigError, match=r"leader_election\.renew_deadline"):
        leader(base, **fields)


def test_the_identity_is_the_pod_name_unless_configured(base: Path) -> None:
    """RECONCILER_IDENTITY, then leader_election.identity, then POD_NAME, then HOSTNAME (a container's
    hostname is its pod's name), and only then host name plus process id (unique, not stable)."""
    pod = {"POD_NAME": "reconciler-7d9-x2", "HOSTNAME": "reconciler-7d9-x2-host"}
    assert leader(base, pod).identity == "reconciler-7d9-x2"
    assert leader(base, {"HOSTNAME": "reconciler-7d9-x2-host"}).identity == "reconciler-7d9-x2-host"
    assert leader(base, pod, identity="configured").identity == "configured"
    assert leader(base, {**pod, "RECONCILER_IDENTITY": "from-env"}, identity="configured").identity == (
        "from-env"
    )
    assert leader(base).identity == f"{socket.gethostname()}-{os.getpid()}"
