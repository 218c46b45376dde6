"""Promotion policy: parsing with named errors, windows, and which approvals count."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from reconciler.promotion.policy import PolicyError, counted_approvals, parse, window_verdict

ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
ENVIRONS: dict[str, str] = {}


def config(**pipeline: Any) -> dict[str, Any]:
    return {
        "approvers": [{"identity": "alice@example.com", "keys": [ALICE_KEY], "groups": ["sre"]}],
        "pipelines": [
            {"name": "shop", "from": "staging", "to": "production", "approvers": ["group:sre"], **pipeline}
        ],
    }


def load(raw: dict[str, Any]) -> Any:
    return parse(raw, Path("/"), ["staging", "production"], ENVIRONS)


def test_a_full_pipeline_parses() -> None:
    settings = load(
        config(
            approvals=2,
            soak="10m",
            expire_after="1d",
            windows=[{"allow": True, "days": ["mon", "tue"], "start": "09:00", "end": "17:00"}],
            rollback={"approvals": 1},
        )
    )
    pipeline = settings.pipeline("staging", "production")
    assert pipeline is not None
    assert (pipeline.approvals, pipeline.soak, pipeline.expire_after) == (2, 600.0, 86400.0)
    assert pipeline.rollback.approvals == 1
    assert settings.may_approve(pipeline, "alice@example.com")
    assert not settings.may_approve(pipeline, "mallory@example.com")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": "prod"}, r"pipelines\[0\]\.to: no environment named 'prod'"),
        ({"approvals": 0}, r"pipelines\[0\]\.approvals"),
        ({"approvers": ["bob@example.com"]}, r"'bob@example.com' is not in promotions.approvers"),
        ({"soak": "soon"}, r"pipelines\[0\]\.soak"),
        ({"windows": [{"allow": True, "timezone": "Mars/Olympus"}]}, r"windows\[0\]\.timezone"),
        (
            {"windows": [{"allow": True, "start": "18:00", "end": "09:00"}]},
            r"windows\[0\]: end must be after",
        ),
        ({"images": False}, r"promotes nothing"),
        ({"files": ["../secret"]}, r"files: '\.\./secret'"),
        ({"colour": "blue"}, r"unknown field\(s\) colour"),
    ],
)
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load(config(**change))


def test_an_approver_without_a_key_is_refused() -> None:
    """An approver needs at least one SSH public key (here or in the allowed_signers file)."""
    raw = config()
    raw["approvers"][0].pop("keys")
    with pytest.raises(PolicyError, match=r"approvers\[0\]\.keys: alice@example.com has no SSH public key"):
        load(raw)


def test_an_approver_with_a_shared_secret_is_refused() -> None:
    """HMAC secrets are for integrations only: a person's approval must be unforgeable by the daemon."""
    raw = config()
    raw["approvers"][0]["secret_file"] = "/etc/alice"
    with pytest.raises(PolicyError, match=r"approvers\[0\]\.secret_file: approvers sign with their own SSH"):
        load(raw)


def test_a_bad_public_key_names_its_field() -> None:
    """A key line that is not a usable SSH public key names approvers[0].keys[1]."""
    raw = config()
    raw["approvers"][0]["keys"].append("ssh-ed25519 not-base64")
    with pytest.raises(PolicyError, match=r"approvers\[0\]\.keys\[1\]"):
        load(raw)


def test_keys_from_an_allowed_signers_file(tmp_path: Path) -> None:
    """OpenSSH's allowed_signers format: principals are approver identities; a principal that is not an
    approver is an error; namespaces restrict what a key may sign."""
    (tmp_path / "signers").write_text(
        f'alice@example.com namespaces="reconciler-promotion" {ALICE_KEY}\n'
        f'bob@example.com namespaces="git" {ALICE_KEY}\n'
    )
    raw = config()
    raw["approvers"][0].pop("keys")
    raw["approvers"].append({"identity": "bob@example.com"})
    raw["allowed_signers_file"] = "signers"
    settings = parse(raw, tmp_path, ["staging", "production"], {})
    now = dt.datetime.now(dt.UTC)
    assert len(settings.approver("alice@example.com").keys_valid(now)) == 1
    assert settings.approver("bob@example.com").keys_valid(now) == []  # a Git-only key signs no approval
    raw["approvers"].pop()
    with pytest.raises(PolicyError, match=r"bob@example\.com is not an approver"):
        parse(raw, tmp_path, ["staging", "production"], {})


def test_windows_in_their_time_zone_and_deny_wins() -> None:
    settings = load(
        config(
            windows=[
                {
                    "allow": True,
                    "days": ["mon"],
                    "start": "09:00",
                    "end": "17:00",
                    "timezone": "Europe/Berlin",
                },
                {
                    "deny": True,
                    "days": ["mon"],
                    "start": "12:00",
                    "end": "13:00",
                    "timezone": "Europe/Berlin",
                },
            ]
        )
    )
    windows = settings.pipelines[0].windows
    monday_10_berlin = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)  # 10:00 CET
    monday_12_30_berlin = dt.datetime(2026, 11, 23, 11, 30, tzinfo=dt.UTC)
    monday_8_berlin = dt.datetime(2026, 11, 23, 7, 0, tzinfo=dt.UTC)
    tuesday_10_berlin = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    assert window_verdict(windows, monday_10_berlin) == (True, "")
    assert window_verdict(windows, monday_12_30_berlin)[0] is False
    assert "deny window" in window_verdict(windows, monday_12_30_berlin)[1]
    assert window_verdict(windows, monday_8_berlin)[0] is False
    assert window_verdict(windows, tuesday_10_berlin)[0] is False
    assert window_verdict((), monday_8_berlin) == (True, "")


def test_only_distinct_approvals_of_the_exact_revision_by_non_authors_count() -> None:
    approvals = [
        {"identity": "alice@example.com", "revision": "r1"},
        {"identity": "alice@example.com", "revision": "r1"},
        {"identity": "bob@example.com", "revision": "r0"},
        {"identity": "carol@example.com", "revision": "r1"},
        {"identity": "dave@example.com", "revision": "r1"},
    ]
    assert counted_approvals(approvals, "r1", excluded=["Dave@Example.com"]) == [
        "alice@example.com",
        "carol@example.com",
    ]
