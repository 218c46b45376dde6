"""Log lines: JSON when not on a terminal, with the reconcile's context variables; the level filters;
standard-library loggers (aiohttp, asyncio) come out in the same format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from reconciler import logs


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "reconciler"]


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_bound_reconcile_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Every line logged inside a reconcile has environment, revision and reconcile id, and not after."""
    logs.configure("info", json_output=True)
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(environment="shop", revision="abc", reconcile_id="shop-1"):
        log.info("sync started")
        log.warning("render failed", error="x")
    log.info("idle")
    first, second, third = lines(capsys.readouterr().err)
    for line in (first, second):
        assert (line["environment"], line["revision"], line["reconcile_id"]) == ("shop", "abc", "shop-1")
    assert second["level"] == "warning"
    assert "environment" not in third


def test_the_level_filters_and_debug_shows_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    """At warning, info is dropped; at debug, debug lines appear."""
    logs.configure("warning", json_output=True)
    structlog.get_logger("test").info("hidden")
    structlog.get_logger("test").warning("shown")
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["shown"]
    logs.configure("debug", json_output=True)
    structlog.get_logger("test").debug("details")
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["details"]


def test_standard_library_loggers_are_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    """A warning of aiohttp (through ``logging``) is a JSON line with its logger name."""
    logs.configure("info", json_output=True)
    logging.getLogger("aiohttp.server").warning("Error handling request")
    (line,) = lines(capsys.readouterr().err)
    assert line["event"] == "Error handling request"
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "warning"


def test_a_terminal_gets_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Not JSON: level and event first, context as key=value."""
    logs.configure("info", json_output=False)
    with structlog.contextvars.bound_contextvars(environment="shop"):
        structlog.get_logger("test").info("sync started")
    text = capsys.readouterr().err
    assert "sync started" in text
    assert "environment=shop" in text
    assert not text.lstrip().startswith("{")
