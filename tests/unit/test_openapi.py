"""The OpenAPI document matches the daemon's real routes: every route is documented, every documented
path is a route (so a new route cannot ship undocumented)."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from reconciler.daemon import Daemon
from reconciler.server import openapi


@pytest.fixture
def app(offline_daemon: Daemon) -> web.Application:
    return offline_daemon.app


def routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the daemon's application serves (HEAD is implied by GET)."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            found.add((route.method, str(path)))
    return found


def documented() -> set[tuple[str, str]]:
    doc = openapi.document()
    return {(method.upper(), path) for path, operations in doc["paths"].items() for method in operations}


def test_every_route_is_documented_and_every_documented_path_is_a_route(app: web.Application) -> None:
    """Both directions, method by method."""
    served, described = routes(app), documented()
    assert served - described == set(), "routes missing from reconciler/server/openapi.py"
    assert described - served == set(), "documented paths the application does not serve"


def test_the_document_is_well_formed() -> None:
    """OpenAPI 3, unique operation ids, every $ref resolves, path parameters are declared."""
    doc = openapi.document()
    assert doc["openapi"].startswith("3.")
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(doc)))
    assert refs <= set(doc["components"]["schemas"])
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path
