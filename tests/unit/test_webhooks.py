"""Webhook parsing and verification (pure), and a property test of the real HTTP handler: no 5xx, ever."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.metrics import Metrics
from reconciler.server import webhooks
from reconciler.server.app import build_app
from reconciler.settings import WebhookConfig

SECRET = "It's a Secret to Everybody"


def test_github_documented_test_vector() -> None:
    """GitHub's documented example: secret and payload give a signature starting 757107ea."""
    assert webhooks.sign(SECRET, b"Hello, World!").startswith("757107ea")
    headers = {
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": "sha256=" + webhooks.sign(SECRET, b"Hello, World!"),
    }
    assert webhooks.verify("github", headers, b"Hello, World!", SECRET)
    assert not webhooks.verify("github", headers, b"Hello, World?", SECRET)


@pytest.mark.parametrize(
    ("headers", "provider"),
    [
        ({"X-GitHub-Event": "push"}, "github"),
        ({"X-Gitlab-Event": "Push Hook"}, "gitlab"),
        ({"X-Gitea-Event": "push", "X-GitHub-Event": "push"}, "gitea"),
        ({"X-Forgejo-Event": "push"}, "gitea"),
        ({"X-Event-Key": "repo:refs_changed"}, "bitbucket"),
        ({"X-Reconciler-Signature": "sha256=00"}, "generic"),
        ({"Content-Type": "application/json"}, ""),
    ],
)
def test_provider_detection(headers: dict[str, str], provider: str) -> None:
    """Each provider is recognised by its own headers; Gitea wins over its GitHub-compatible headers."""
    assert webhooks.detect(headers) == provider


def test_each_provider_verifies_its_own_signature_format() -> None:
    """GitLab compares the token; Gitea uses bare hex; Bitbucket and generic use sha256=<hex>."""
    body = b'{"ref": "refs/heads/main"}'
    digest = webhooks.sign(SECRET, body)
    assert webhooks.verify("gitlab", {"X-Gitlab-Token": SECRET}, body, SECRET)
    assert not webhooks.verify("gitlab", {"X-Gitlab-Token": SECRET + "x"}, body, SECRET)
    assert webhooks.verify("gitea", {"X-Gitea-Signature": digest}, body, SECRET)
    assert webhooks.verify("bitbucket", {"X-Hub-Signature": f"sha256={digest}"}, body, SECRET)
    assert webhooks.verify("generic", {"X-Reconciler-Signature": f"sha256={digest}"}, body, SECRET)
    assert not webhooks.verify("generic", {"X-Reconciler-Signature": digest}, body, SECRET)


def test_parse_reads_ref_and_commit_and_drops_garbage_shas() -> None:
    """ref and after come from the payload; an after that is not a commit id is ignored."""
    push = webhooks.parse(
        "github",
        {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1"},
        json.dumps({"ref": "refs/heads/main", "after": "A" * 40}).encode(),
    )
    assert (push.kind, push.ref, push.after, push.delivery) == ("push", "refs/heads/main", "a" * 40, "d1")
    odd = webhooks.parse("github", {"X-GitHub-Event": "push"}, json.dumps({"after": "../../etc"}).encode())
    assert odd.after == ""
    bitbucket = webhooks.parse(
        "bitbucket",
        {"X-Event-Key": "repo:refs_changed"},
        json.dumps({"changes": [{"refId": "refs/heads/main", "toHash": "b" * 40}]}).encode(),
    )
    assert (bitbucket.ref, bitbucket.after) == ("refs/heads/main", "b" * 40)
    with pytest.raises(webhooks.WebhookError) as error:
        webhooks.parse("github", {"X-GitHub-Event": "push"}, b"[1, 2")
    assert error.value.status == 400


class _Controller:
    def __init__(self) -> None:
        self.pushes: list[webhooks.Push] = []

    def push(self, push: webhooks.Push) -> str:
        self.pushes.append(push)
        return "accepted"

    def readiness(self) -> tuple[bool, list[str]]:
        return True, []

    def degraded(self) -> list[str]:
        return []

    def liveness(self) -> list[str]:
        return []

    async def environment_statuses(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, _Controller]]:
    """The real aiohttp application on a loopback port, in a background thread."""
    controller = _Controller()
    config = WebhookConfig(
        secrets={"github": SECRET, "gitlab": SECRET, "generic": SECRET},
        max_body_bytes=4096,
        body_timeout=2,
        rate_limit=10**6,
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        metrics = Metrics()
        runner = web.AppRunner(build_app(controller, config, metrics.registry, metrics.webhook_requests))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    started.wait(10)
    yield holder["port"], controller
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


HEADER_NAMES = [
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Hub-Signature-256",
    "X-Gitlab-Event",
    "X-Gitlab-Token",
    "X-Gitea-Event",
    "X-Gitea-Signature",
    "X-Event-Key",
    "X-Hub-Signature",
    "X-Reconciler-Signature",
    "X-Reconciler-Event",
    "Content-Type",
]
header_values = st.one_of(
    st.sampled_from(["push", "ping", "Push Hook", "repo:refs_changed", "sha256=", "application/json", ""]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
)
bodies = st.one_of(
    st.binary(max_size=6000),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["ref", "after", "changes", "x"]),
            st.one_of(st.text(max_size=50), st.integers(), st.none(), st.lists(st.integers())),
        ),
    ),
)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=6),
    body=bodies,
    sign_it=st.booleans(),
)
def test_no_request_ever_gets_a_5xx(
    server: tuple[int, _Controller], headers: dict[str, str], body: bytes, sign_it: bool
) -> None:
    """1,000 generated requests (random headers, bodies, valid or invalid signatures): always 2xx or 4xx."""
    port, _ = server
    if sign_it:
        headers = {**headers, "X-Hub-Signature-256": "sha256=" + webhooks.sign(SECRET, body)}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/webhooks/git", body=body, headers=headers)
        status = connection.getresponse().status
    finally:
        connection.close()
    assert 200 <= status < 500, (status, headers)
