"""Real responses of the daemon's application match the OpenAPI document: every GET route, the push
webhook (signed, forged, unsigned, ignored, duplicate, rate limited, shutting down) and the promotion
bodies (``summary()`` of realistic Promotions, a dry run's preview) are validated, in strict mode and
refusing unknown fields, against the model that the documented answer for their method, path and status
refers to (``reconciler.server.models``). A field the code emits that no model names fails here."""

from __future__ import annotations

import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any, get_args

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from reconciler.daemon import Daemon
from reconciler.health import HealthStatus
from reconciler.objects import Action, ChangeSet, ChangeSetEntry, ObjectKey
from reconciler.promotion.overlay import Overlays
from reconciler.promotion.policy import Pipeline, PromotionSettings
from reconciler.promotion.requests import Requests
from reconciler.promotion.views import PHASES, EnvView, summary
from reconciler.server import models, openapi
from reconciler.server.app import STATE
from reconciler.source.gate import UNVERIFIED
from reconciler.sync import SyncResult
from reconciler.sync.outcome import Condition, Reason
from tests.unit.test_openapi import routes

SECRET = "a-long-random-webhook-secret"  # the offline daemon's GitHub secret (tests/unit/conftest.py)
REV, HEAD = "a" * 40, "b" * 40
BY_NAME: dict[str, type[BaseModel]] = {model.__name__: model for model in models.MODELS}


def documented_models(method: str, template: str, status: int) -> list[type[BaseModel]]:
    """The models the document names for this answer (one, or each of a ``oneOf``)."""
    answer = openapi.document()["paths"][template][method.lower()]["responses"].get(str(status))
    assert answer is not None, f"{method} {template} answers {status}, which the document does not list"
    schema = answer["content"]["application/json"]["schema"]
    refs = [schema] if "$ref" in schema else schema["oneOf"]
    return [BY_NAME[ref["$ref"].rsplit("/", 1)[1]] for ref in refs]


def validate(method: str, template: str, status: int, text: str) -> None:
    """``text`` is a body one of the documented models accepts, strictly and with no unknown field."""
    errors = []
    for model in documented_models(method, template, status):
        try:
            model.model_validate_json(text, strict=True)
            return
        except ValueError as exc:
            errors.append(str(exc))
    pytest.fail(f"{method} {template} {status}: {text[:300]}\n" + "\n".join(errors))


async def check(http: TestClient[Any, Any], method: str, path: str, template: str = "", **kw: Any) -> Any:
    """Send the request, validate the answer against the document, return its parsed body."""
    response: ClientResponse = await http.request(method, path, **kw)
    text = await response.text()
    assert response.content_type == "application/json", (path, response.content_type)
    validate(method, template or path, response.status, text)
    return response.status, json.loads(text)


@pytest.fixture
async def http(offline_daemon: Daemon) -> Any:
    async with TestClient(TestServer(offline_daemon.app)) as client:
        yield client


def synced(revision: str) -> SyncResult:
    """A finished sync that changed, failed and left unchanged objects, with everything it reports."""
    changes = ChangeSet()
    for index, action in enumerate(Action):
        message = "forbidden" if action == Action.FAILED else ""
        changes.add(ChangeSetEntry(ObjectKey("apps", "Deployment", "shop", f"d-{index}"), action, message))
    result = SyncResult("staging", revision, changes, HealthStatus.PROGRESSING, synced=True)
    result.unhealthy = {"Deployment/shop/d-0": "Progressing: 1 of 2 replicas"}
    result.end(Condition.RECONCILING, Reason.PROGRESSING, "1 objects not healthy yet")
    result.durations = {"render": 0.25, "apply": 1.5, "stage apps": 1.5}
    result.inventory_size = 6
    result.prune_blocked = ""
    return result


async def test_every_get_route_answers_a_documented_body(
    http: TestClient[Any, Any], offline_daemon: Daemon
) -> None:
    """Each GET route of the daemon's application, as a fresh daemon answers it."""
    await check(http, "GET", "/healthz")
    status, ready = await check(http, "GET", "/readyz")
    assert (status, ready["ready"]) == (503, False)
    _, listed = await check(http, "GET", "/api/v1/environments")
    assert [env["reason"] for env in listed["environments"]] == ["Pending"]
    await check(http, "GET", "/api/v1/environments/staging", "/api/v1/environments/{name}")
    await check(http, "GET", "/api/v1/environments/nowhere", "/api/v1/environments/{name}")
    # the offline daemon has no promotions configured: 404 with an Error
    assert (await check(http, "GET", "/api/v1/promotions"))[0] == 404
    assert (await check(http, "GET", "/api/v1/promotions/p-1", "/api/v1/promotions/{id}"))[0] == 404
    document = await http.get("/openapi.json")  # documented as an object: this very document
    assert await document.json() == json.loads(json.dumps(openapi.document()))
    metrics = await http.get("/metrics")
    documented = openapi.document()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].split(";")[0] in {kind.split(";")[0] for kind in documented}
    hit = {"/healthz", "/readyz", "/api/v1/environments", "/api/v1/environments/{name}", "/openapi.json"}
    hit |= {"/api/v1/promotions", "/api/v1/promotions/{id}", "/metrics"}
    assert {path for method, path in routes(offline_daemon.app) if method == "GET"} == hit


async def test_a_dead_loop_answers_the_documented_failure(
    http: TestClient[Any, Any], offline_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline_daemon, "liveness", lambda: ["promotions"])
    assert (await check(http, "GET", "/healthz"))[0] == 500


async def test_environment_statuses_in_every_state_match_the_model(
    http: TestClient[Any, Any], offline_daemon: Daemon
) -> None:
    """Held back before a sync, synced with every kind of change, and refused by repository.verify."""
    state = offline_daemon.environments["staging"]
    one = "/api/v1/environments/{name}"
    state.waiting_for = "waiting for shared: Reconciling"
    _, held = await check(http, "GET", "/api/v1/environments/staging", one)
    assert (held["reason"], "message" in held, "changes" in held) == ("DependencyNotReady", True, False)
    state.waiting_for = ""
    state.result, state.revision, state.syncs, state.last_sync = synced(REV), REV, 3, 1764600000.5
    state.applied_revision, state.last_success = REV, 1764600000.0
    state.last_change = {"revision": REV, "time": "2026-12-01T18:00:00Z", "summary": "1 created"}
    _, body = await check(http, "GET", "/api/v1/environments/staging", one)
    assert body["lastChangeSet"]["objects"]
    assert body["health"] == "Progressing"
    state.last_change = {"revision": REV}  # read back from an Environment object: empty fields left out
    state.result = SyncResult("staging", REV)
    state.result.end(Condition.STALLED, Reason.RENDER_FAILED, "kustomize: no such file")
    state.unverified = "commit bbbbbbbbbbbb is not signed by a trusted key; keeping revision aaaaaaaaaaaa"
    _, body = await check(http, "GET", "/api/v1/environments/staging", one)
    assert (body["condition"], body["reason"], body["inventoryObjects"]) == ("Stalled", UNVERIFIED, None)
    await check(http, "GET", "/api/v1/environments")


def github(body: bytes, event: str = "push", delivery: str = "d-1", secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


async def test_webhook_replies_match_the_document(http: TestClient[Any, Any], offline_daemon: Daemon) -> None:
    """Accepted, duplicate, pong, ignored, refused (forged, unknown sender, malformed), rate limited and
    shutting down: each a WebhookResult under the status the document lists."""
    push = json.dumps({"ref": "refs/heads/main", "after": HEAD}).encode()
    hook = "/webhooks/git"
    answers = [
        (await check(http, "POST", hook, data=push, headers=github(push)))[1]["result"],
        (await check(http, "POST", hook, data=push, headers=github(push)))[1]["result"],
        (await check(http, "POST", hook, data=b"{}", headers=github(b"{}", "ping", "d-2")))[1]["result"],
        (await check(http, "POST", hook, data=b"{}", headers=github(b"{}", "issues", "d-3")))[1]["result"],
        (await check(http, "POST", hook, data=push, headers=github(push, delivery="d-4", secret="forged")))[
            1
        ],
        (await check(http, "POST", hook, data=push))[1],
        (await check(http, "POST", hook, data=b"[1]", headers=github(b"[1]", delivery="d-5")))[1],
    ]
    assert answers[:4] == ["accepted", "duplicate", "pong", "ignored"]
    assert [answer["result"] for answer in answers[4:]] == ["refused"] * 3
    limit = offline_daemon.settings.webhooks.rate_limit
    for _ in range(limit):
        status, _ = await check(http, "POST", hook, data=push, headers=github(push, secret="forged"))
    assert status == 429
    offline_daemon.app[STATE].accepting = False
    assert (await check(http, "POST", hook, data=push, headers=github(push, delivery="d-6")))[0] == 503


def promotion(phase: str, kind: str = "Promotion") -> dict[str, Any]:
    """A Promotion as the store holds it: created by a request, decided, and (when Succeeded) committed."""
    decision = {"identity": "alice", "revision": REV, "at": "2026-12-01T18:05:00Z", "via": "alice-laptop"}
    status: dict[str, Any] = {
        "phase": phase,
        "message": "promoted in commit cccccccccccc",
        "shortRevision": REV[:12],
        "approvalSummary": "1/1",
        "approvals": [{**decision, "nonce": "n-2", "comment": "ship it"}],
        "rejections": [{**decision, "identity": "bob", "nonce": "n-3"}],
        "nonces": ["n-1", "n-2"],
    }
    if phase == "Succeeded":
        status |= {"commit": "c" * 40, "previousImages": [{"name": "shop", "newTag": "1"}]}
    return {
        "apiVersion": "reconciler.dev/v1alpha1",
        "kind": "Promotion",
        "metadata": {"name": "staging-to-production-x1", "creationTimestamp": "2026-12-01T18:00:00Z"},
        "spec": {
            "pipeline": "staging-to-production",
            "from": "staging",
            "to": "production",
            "type": kind,
            "sourceRevision": REV,
            "sourceInputKey": "k-1",
            "requestedBy": "carol",
            "requestNonce": "n-1",
            "requiredApprovals": 1,
            "images": [{"name": "shop", "newName": "registry.example.com/shop", "newTag": "2"}],
            "files": ["config.yaml"],
            "authors": ["dev@example.com", "Dev"],
            **({"rollbackOf": "staging-to-production-x0"} if kind == "Rollback" else {}),
        },
        "status": status,
    }


def test_promotion_summaries_match_the_document() -> None:
    """``summary()`` of a Succeeded promotion, a Pending rollback and one still being created, alone
    (a read, a decision, a request) and listed."""
    bodies = [
        promotion("Succeeded"),
        promotion("Pending", "Rollback"),
        {**promotion("Pending"), "status": {}},
    ]
    for body in bodies:
        text = json.dumps(summary(body))
        validate("GET", "/api/v1/promotions/{id}", 200, text)
        validate("POST", "/api/v1/promotions/{id}/approvals", 200, text)
        validate("POST", "/api/v1/promotions", 201, text)
    listed = json.dumps({"promotions": [summary(body) for body in bodies]})
    validate("GET", "/api/v1/promotions", 200, listed)


KUSTOMIZATION = 'resources: [../../base]\nimages:\n  - name: shop\n    newTag: "{tag}"\n'


async def test_a_dry_run_preview_matches_the_document() -> None:
    """``Requests.preview`` over a fake repository: staging at tag 2, production at the head at tag 1."""
    files = {
        (REV, "environments/staging/kustomization.yaml"): KUSTOMIZATION.format(tag=2),
        (REV, "environments/staging/config.yaml"): "level: debug\n",
        (HEAD, "environments/production/kustomization.yaml"): KUSTOMIZATION.format(tag=1),
        (HEAD, "environments/production/config.yaml"): "level: info\n",
    }
    writer = SimpleNamespace(is_ancestor=lambda a, b: True, show=lambda rev, path: files.get((rev, path)))

    def view(name: str) -> EnvView:
        return EnvView(name, f"environments/{name}", REV, "k-1", True, "Ready", "Succeeded", "", 1.0)

    host = SimpleNamespace(environment_view=view, head_revision=lambda: HEAD)
    pipeline = Pipeline("staging-to-production", "staging", "production", files=("config.yaml",))
    requests = Requests(
        PromotionSettings(pipelines=(pipeline,)),
        store=None,  # type: ignore[arg-type]
        writer=writer,  # type: ignore[arg-type]
        host=host,  # type: ignore[arg-type]
        overlays=Overlays(host, writer),  # type: ignore[arg-type]
        status=None,  # type: ignore[arg-type]
        auditor=None,  # type: ignore[arg-type]
        wake=lambda: None,
    )
    call = SimpleNamespace(payload={"from": "staging", "to": "production", "dry_run": True})
    preview = await requests.preview(call)  # type: ignore[arg-type]
    assert '+    newTag: "2"' in preview["diff"]
    assert "+level: debug" in preview["diff"]
    validate("POST", "/api/v1/promotions", 200, json.dumps(preview))


def test_every_json_answer_refers_to_a_model() -> None:
    """No body is written by hand in the document (``/openapi.json`` itself excepted)."""
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                schema = (answer.get("content") or {}).get("application/json", {}).get("schema")
                if schema is None or path == "/openapi.json":
                    continue
                assert documented_models(method, path, int(status)), (method, path, status)


def test_the_enums_are_the_codes_own() -> None:
    """Values the models spell out (``Literal``) are exactly those the code produces."""
    phase = models.Promotion.model_fields["phase"].annotation
    assert set(get_args(phase)) == set(PHASES)
    held = get_args(models.StatusReason)[1]
    assert UNVERIFIED in get_args(held)
    assert not set(get_args(held)) & {r.value for r in Reason}
