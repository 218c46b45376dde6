"""The OpenAPI 3.1 document of the daemon's HTTP API, served at ``GET /openapi.json``.

``PATHS`` holds one entry per route of the aiohttp application (path template -> method -> operation:
parameters, request bodies, every answer and its headers); the bodies are not written here: each
answer refers to a model of ``reconciler.server.models``, and ``SCHEMAS`` (``components.schemas``) is
generated from those models (JSON Schema 2020-12, hence OpenAPI 3.1). A unit test compares ``PATHS``
with the application's router in both directions (the daemon's whole application, promotion routes
included), so every new route must be documented here; another validates real responses against the
model each documented answer names. A new route adds its path to ``PATHS`` and its bodies to
``models.MODELS``.
"""

from __future__ import annotations

import copy
from typing import Any

from reconciler import __version__
from reconciler.server import jsonbody, listener, models

JSON = "application/json"


REF = "#/components/schemas/{model}"


def _ref(model: type[models.Body]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


# the limits every signed POST route states (webhooks and promotion calls)
_BAD_INPUT = (
    "a header that is not UTF-8 (on every route), or a body that is not one JSON object: not UTF-8, "
    f"nesting arrays or objects deeper than {jsonbody.MAX_DEPTH} levels, a number longer than "
    f"{jsonbody.MAX_NUMBER_CHARS} characters or out of range, NaN or Infinity, a duplicate key, a lone "
    "surrogate"
)
_LATE = (
    "the body did not arrive within the body timeout; or the request headers did not arrive within "
    f"{listener.HEADER_TIMEOUT:g} s of their first byte (then the answer is an Error and the connection "
    "is closed)"
)
_RATE_LIMITED = (
    "rate limited, in separate buckets: requests without a valid signature (unsigned, forged, unknown "
    "sender, refused before verification, or replaying a body already accepted) per source address and "
    "for all addresses together (a multiple of that), and valid signed ones per signer (webhook provider, "
    "promotion key). A flood without a valid signature, even from the one address an Ingress forwards "
    "from, never spends the bucket of signed requests. Retry-After gives the window in seconds."
)
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_HEADERS_TOO_LARGE = (
    f"request headers larger than {listener.MAX_HEADER_BYTES} bytes in all (then the connection is "
    f"closed); more than {listener.MAX_HEADERS} headers or a line longer than {listener.MAX_FIELD_SIZE} "
    "bytes is a 400"
)


def _limits(schema: dict[str, Any]) -> dict[str, Any]:
    """The 400, 408, 413, 429 and 431 answers of a signed POST route, with ``schema`` as their body."""
    return {
        "400": _json(f"unknown sender or malformed request: {_BAD_INPUT}", schema),
        "408": _json(_LATE, {"oneOf": [schema, _ref(models.Error)]}),
        "413": _json("body too large", schema),
        "429": {**_json(_RATE_LIMITED, schema), "headers": _RETRY_AFTER},
        "431": _json(_HEADERS_TOO_LARGE, _ref(models.Error)),
    }


def _lift(schemas: dict[str, dict[str, Any]], name: str, schema: dict[str, Any]) -> None:
    """Add ``schema`` as ``name``; a model and its nested models may meet again, never differently."""
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are named {name!r}")


def schemas() -> dict[str, dict[str, Any]]:
    """``components.schemas``: every model of ``reconciler.server.models``, with the models and enums
    they nest lifted from their ``$defs`` (a fresh copy)."""
    result: dict[str, dict[str, Any]] = {}
    for model in models.MODELS:
        schema = model.model_json_schema(ref_template=REF)
        for name, nested in schema.pop("$defs", {}).items():
            _lift(result, name, nested)
        _lift(result, model.__name__, schema)
    return result


SCHEMAS = schemas()

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: the event loop answers and none of the daemon's loops died.",
            "operationId": "healthz",
            "responses": {
                "200": _json("alive", _ref(models.Liveness)),
                "500": _json("an internal loop died (restart the process)", _ref(models.LivenessFailure)),
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: Git fetched and fresh, every cluster reachable.",
            "operationId": "readyz",
            "responses": {
                "200": _json("ready", _ref(models.Readiness)),
                "503": _json("not ready, with the reasons", _ref(models.Readiness)),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format); see docs/metrics.md.",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document.",
            "operationId": "openapi",
            "responses": {"200": _json("the OpenAPI 3 document", {"type": "object"})},
        }
    },
    "/webhooks/git": {
        "post": {
            "summary": "A push webhook (GitHub, GitLab, Gitea/Forgejo, Bitbucket Server or generic).",
            "description": "Signed with the provider's scheme (HMAC-SHA256 over the raw body, or GitLab's "
            "token). Answers at once; the payload is only a hint: the daemon fetches from its remote.",
            "operationId": "gitWebhook",
            "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
            "responses": {
                "200": _json("ping answered, or a duplicate delivery", _ref(models.WebhookResult)),
                "202": _json("accepted (a fetch is queued) or ignored", _ref(models.WebhookResult)),
                "401": _json("missing or invalid signature", _ref(models.WebhookResult)),
                **_limits(_ref(models.WebhookResult)),
                "503": _json("shutting down", _ref(models.WebhookResult)),
            },
        }
    },
    "/api/v1/environments": {
        "get": {
            "summary": "Every environment's status.",
            "operationId": "listEnvironments",
            "responses": {"200": _json("every environment", _ref(models.EnvironmentList))},
        }
    },
    "/api/v1/environments/{name}": {
        "get": {
            "summary": "One environment's status.",
            "operationId": "getEnvironment",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json("the environment", _ref(models.EnvironmentStatus)),
                "404": _json("no such environment", _ref(models.Error)),
            },
        }
    },
}

# -- promotions (reconciler/promotion/api.py; bodies and signatures: docs/promotions.md) ------------------
_SIGNED = {
    "required": True,
    "description": (
        "A JSON body signed by the caller: an approver with their own SSH key (X-Reconciler-Signature: "
        "sshsig=<base64 SSHSIG, namespace reconciler-promotion>), an integration with HMAC-SHA256 of its "
        "secret (sha256=<hex>); X-Reconciler-Key-Id names the key (docs/promotions.md)."
    ),
    "content": {JSON: {"schema": {"type": "object"}}},
}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
# promotions name requesters, approvers and commit authors: reads are signed like calls
_SIGNED_READ = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
    for name, description in (
        ("X-Reconciler-Key-Id", "the approver identity or integration name whose key signs"),
        ("X-Reconciler-Timestamp", "Unix seconds, within the policy's timestamp window"),
        (
            "X-Reconciler-Signature",
            "sshsig=<base64> (approver) or sha256=<hex> (integration) over 'GET PATH?QUERY\\nTIMESTAMP'",
        ),
    )
]
_READ_REFUSED = {
    "401": _json("unsigned read, invalid signature, unknown key, or stale timestamp", _ref(models.Error)),
    "429": _json("too many reads (signed ones per key; unsigned ones per address)", _ref(models.Error)),
}
_REFUSED = {
    "401": _json("missing or invalid signature, unknown key, or stale timestamp", _ref(models.Error)),
    "403": _json("the key may not act for the identity, or the identity may not decide", _ref(models.Error)),
    "404": _json("no such promotion or pipeline, or promotions are not configured", _ref(models.Error)),
    "409": _json(
        "replayed nonce, wrong revision, or the promotion takes no more decisions", _ref(models.Error)
    ),
    **_limits(_ref(models.Error)),
}
PATHS["/api/v1/promotions"] = {
    "get": {
        "summary": "Every promotion, newest first (a signed read).",
        "operationId": "listPromotions",
        "parameters": _SIGNED_READ,
        "responses": {
            "200": _json("every promotion", _ref(models.PromotionList)),
            "404": _json("promotions are not configured", _ref(models.Error)),
            **_READ_REFUSED,
        },
    },
    "post": {
        "summary": "Request a promotion (action request: from, to, optional revision) or a rollback.",
        "operationId": "createPromotion",
        "requestBody": _SIGNED,
        "responses": {
            "200": _json(
                "dry_run: true: what the request would commit, nothing created", _ref(models.PromotionPreview)
            ),
            "201": _json("the new promotion", _ref(models.Promotion)),
            **_REFUSED,
        },
    },
}
PATHS["/api/v1/promotions/{id}"] = {
    "get": {
        "summary": "One promotion (a signed read).",
        "operationId": "getPromotion",
        "parameters": _ID + _SIGNED_READ,
        "responses": {
            "200": _json("the promotion", _ref(models.Promotion)),
            "404": _json("no such promotion", _ref(models.Error)),
            **_READ_REFUSED,
        },
    }
}
PATHS["/api/v1/promotions/{id}/approvals"] = {
    "post": {
        "summary": "A signed approval of the promotion's exact source revision.",
        "operationId": "approvePromotion",
        "parameters": _ID,
        "requestBody": _SIGNED,
        "responses": {"200": _json("the promotion", _ref(models.Promotion)), **_REFUSED},
    }
}
PATHS["/api/v1/promotions/{id}/rejections"] = {
    "post": {
        "summary": "A signed rejection.",
        "operationId": "rejectPromotion",
        "parameters": _ID,
        "requestBody": _SIGNED,
        "responses": {"200": _json("the promotion", _ref(models.Promotion)), **_REFUSED},
    }
}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3 document (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "reconciler",
            "version": __version__,
            "description": "The reconciler daemon's HTTP API: webhooks, probes, status and metrics. "
            "On every route: a header that is not UTF-8 is a 400; request headers must arrive within "
            f"{listener.HEADER_TIMEOUT:g} s of their first byte (408, connection closed), be at most "
            f"{listener.MAX_HEADER_BYTES} bytes in all (431, connection closed), {listener.MAX_HEADERS} "
            f"headers and {listener.MAX_FIELD_SIZE} bytes a line (400); an idle keep-alive connection is "
            f"closed after {listener.KEEPALIVE_TIMEOUT:g} s.",
        },
        "paths": copy.deepcopy(PATHS),
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }
