"""Promotion policy: parsing with named errors, windows, and which approvals count."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from reconciler.promotion.policy import PolicyError, counted_approvals, parse, window_verdict

ENVIRONS = {"RECONCILER_APPROVER_ALICE_EXAMPLE_COM_SECRET": "alice-secret-0123456789"}


def config(**pipeline: Any) -> dict[str, Any]:
    return {
        "approvers": [{"identity": "alice@example.com", "groups": ["sre"]}],
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


def test_an_approver_without_a_secret_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"approvers\[0\]\.secret_file: required"):
        parse(config(), Path("/"), ["staging", "production"], {})


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(PolicyError, match="shorter than 16"):
        parse(
            config(),
            Path("/"),
            ["staging", "production"],
            {"RECONCILER_APPROVER_ALICE_EXAMPLE_COM_SECRET": "x"},
        )


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
