"""Signed promotion calls: key and identity binding, timestamps, tampering."""

from __future__ import annotations

import json
import time

import pytest

from reconciler.promotion.policy import Approver, Integration, PromotionSettings
from reconciler.promotion.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    make_body,
    signature,
    verify,
)

ALICE = "alice-secret-0123456789"
BOT = "chatops-secret-0123456789"
SETTINGS = PromotionSettings(
    approvers=(
        Approver("alice@example.com", ALICE, frozenset({"sre"})),
        Approver("bob@example.com", "bob-secret-0123456789abc"),
    ),
    integrations=(Integration("chatops", BOT, frozenset({"group:sre"})),),
)


def headers(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    return {KEY_HEADER: key_id, SIGNATURE_HEADER: signature(secret, body)}


def test_an_approver_signs_as_themselves() -> None:
    body = make_body("approve", "alice@example.com", promotion="p", revision="r")
    call = verify(SETTINGS, headers("alice@example.com", ALICE, body), body)
    assert (call.identity, call.action, call.via_integration) == ("alice@example.com", "approve", False)
    assert call.payload["revision"] == "r"


def test_an_approver_key_cannot_speak_for_someone_else() -> None:
    body = make_body("approve", "bob@example.com")
    with pytest.raises(SignatureError) as refused:
        verify(SETTINGS, headers("alice@example.com", ALICE, body), body)
    assert refused.value.status == 403


def test_an_integration_acts_only_for_the_identities_its_policy_lists() -> None:
    body = make_body("approve", "alice@example.com")
    assert verify(SETTINGS, headers("chatops", BOT, body), body).via_integration
    body = make_body("approve", "bob@example.com")
    with pytest.raises(SignatureError, match="may not act for"):
        verify(SETTINGS, headers("chatops", BOT, body), body)


def test_a_tampered_body_or_wrong_secret_or_unknown_key_is_refused() -> None:
    body = make_body("approve", "alice@example.com", revision="a" * 40)
    good = headers("alice@example.com", ALICE, body)
    tampered = body.replace(b"a" * 40, b"b" * 40)
    for hdrs, data in (
        (good, tampered),
        (headers("alice@example.com", "not-the-secret-0123456", body), body),
        (headers("mallory@example.com", ALICE, body), body),
        ({}, body),
    ):
        with pytest.raises(SignatureError) as refused:
            verify(SETTINGS, hdrs, data)
        assert refused.value.status == 401


def test_an_old_timestamp_is_a_replay() -> None:
    payload = json.loads(make_body("approve", "alice@example.com"))
    payload["timestamp"] = int(time.time()) - 3600
    body = json.dumps(payload).encode()
    with pytest.raises(SignatureError, match="timestamp outside"):
        verify(SETTINGS, headers("alice@example.com", ALICE, body), body)


def test_malformed_signed_bodies_get_400_not_a_crash() -> None:
    for body in (b"[1,2]", b"\xff\xfe", b'{"identity": "alice@example.com", "action": "approve"}'):
        with pytest.raises(SignatureError) as refused:
            verify(SETTINGS, headers("alice@example.com", ALICE, body), body)
        assert refused.value.status == 400
