"""Signed promotion calls: approvers sign with their own SSH keys, integrations with HMAC secrets; key and
identity binding, timestamps, tampering, and refusal of any signature the daemon itself could make."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.promotion import sshsig
from reconciler.promotion.policy import Integration, PromotionSettings
from reconciler.promotion.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    authenticate_read,
    make_body,
    read_message,
    signature,
    verify,
)
from tests.support import ApproverKey

BOT = "chatops-secret-0123456789"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, ApproverKey]:
    return {name: ApproverKey.create(tmp_path, f"{name}@example.com") for name in ("alice", "bob", "mallory")}


@pytest.fixture
def settings(keys: dict[str, ApproverKey]) -> PromotionSettings:
    return PromotionSettings(
        approvers=(keys["alice"].approver(frozenset({"sre"})), keys["bob"].approver()),
        integrations=(Integration("chatops", BOT, frozenset({"group:sre"})),),
    )


def hmac_headers(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    return {KEY_HEADER: key_id, SIGNATURE_HEADER: signature(secret, body)}


def test_an_approver_signs_as_themselves_with_their_ssh_key(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """A body signed with alice's own SSH key is alice's approval."""
    body = make_body("approve", "alice@example.com", promotion="p", revision="r")
    call = verify(settings, keys["alice"].headers(body), body)
    assert (call.identity, call.action, call.via_integration) == ("alice@example.com", "approve", False)
    assert call.payload["revision"] == "r"


def test_a_signature_made_with_plain_ssh_keygen_is_accepted(
    settings: PromotionSettings, keys: dict[str, ApproverKey], tmp_path: Path
) -> None:
    """``ssh-keygen -Y sign -n reconciler-promotion`` over the body, sent as sshsig=<base64>, verifies."""
    body = make_body("approve", "alice@example.com", promotion="p", revision="r")
    (tmp_path / "body.json").write_bytes(body)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-Y",
            "sign",
            "-n",
            "reconciler-promotion",
            "-f",
            str(keys["alice"].private_key),
            str(tmp_path / "body.json"),
        ],
        check=True,
    )
    armored = (tmp_path / "body.json.sig").read_text()
    headers = {KEY_HEADER: "alice@example.com", SIGNATURE_HEADER: sshsig.header_value(armored)}
    assert verify(settings, headers, body).identity == "alice@example.com"


def test_an_approver_key_cannot_speak_for_someone_else(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """alice's key signing a body that says bob acts: 403."""
    body = make_body("approve", "bob@example.com")
    with pytest.raises(SignatureError) as refused:
        verify(settings, keys["alice"].headers(body), body)
    assert refused.value.status == 403


def test_the_daemons_own_secrets_or_another_key_cannot_sign_as_an_approver(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """An HMAC (whatever secret: an integration's, the webhook's) under alice's key id, bob's or an
    unlisted key presented as alice, a tampered body: all 401."""
    body = make_body("approve", "alice@example.com", revision="a" * 40)
    for headers, data in (
        (hmac_headers("alice@example.com", BOT, body), body),
        (keys["bob"].headers(body, key_id="alice@example.com"), body),
        (keys["mallory"].headers(body, key_id="alice@example.com"), body),
        (keys["alice"].headers(body), body.replace(b"a" * 40, b"b" * 40)),
        (keys["mallory"].headers(body), body),
        ({}, body),
    ):
        with pytest.raises(SignatureError) as refused:
            verify(settings, headers, data)
        assert refused.value.status == 401


def test_a_key_removed_from_the_policy_no_longer_signs(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """Revocation is removing the key: the same signature is refused by the new policy."""
    body = make_body("approve", "alice@example.com")
    headers = keys["alice"].headers(body)
    revoked = PromotionSettings(approvers=(keys["bob"].approver(),), integrations=settings.integrations)
    assert verify(settings, headers, body)
    with pytest.raises(SignatureError):
        verify(revoked, headers, body)


def test_an_integration_acts_only_for_the_identities_its_policy_lists(settings: PromotionSettings) -> None:
    """An integration's HMAC may assert the identities it lists (here group sre), no one else."""
    body = make_body("approve", "alice@example.com")
    assert verify(settings, hmac_headers("chatops", BOT, body), body).via_integration
    body = make_body("approve", "bob@example.com")
    with pytest.raises(SignatureError, match="may not act for"):
        verify(settings, hmac_headers("chatops", BOT, body), body)


def test_an_old_timestamp_is_a_replay(settings: PromotionSettings, keys: dict[str, ApproverKey]) -> None:
    """A body signed an hour ago is refused even with a valid signature."""
    payload = json.loads(make_body("approve", "alice@example.com"))
    payload["timestamp"] = int(time.time()) - 3600
    body = json.dumps(payload).encode()
    with pytest.raises(SignatureError, match="timestamp outside"):
        verify(settings, keys["alice"].headers(body), body)


def test_malformed_signed_bodies_get_400_not_a_crash(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """A correctly signed body that is not a call: 400."""
    for body in (b"[1,2]", b"\xff\xfe", b'{"identity": "alice@example.com", "action": "approve"}'):
        with pytest.raises(SignatureError) as refused:
            verify(settings, keys["alice"].headers(body), body)
        assert refused.value.status == 400


def test_reads_are_signed_for_their_path_and_time(
    settings: PromotionSettings, keys: dict[str, ApproverKey]
) -> None:
    """A read signs 'GET PATH' and the time: accepted for that path, refused for another path, without
    a timestamp, with a stale one, or signed by a key outside the policy."""
    now = int(time.time())
    path = "/api/v1/promotions/p1"
    headers = {**keys["alice"].headers(read_message("GET", path, str(now))), TIMESTAMP_HEADER: str(now)}
    assert authenticate_read(settings, headers, "GET", path).key_id == "alice@example.com"
    for method, other_path, changed in (
        ("GET", "/api/v1/promotions", headers),
        ("GET", path, {k: v for k, v in headers.items() if k != TIMESTAMP_HEADER}),
        ("GET", path, {**headers, TIMESTAMP_HEADER: str(now - 3600)}),
        (
            "GET",
            path,
            {**keys["mallory"].headers(read_message("GET", path, str(now))), TIMESTAMP_HEADER: str(now)},
        ),
    ):
        with pytest.raises(SignatureError) as refused:
            authenticate_read(settings, changed, method, other_path)
        assert refused.value.status == 401
