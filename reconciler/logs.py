"""structlog configuration: JSON lines when stderr is not a terminal, readable lines when it is.

Every line carries the context variables bound for the current reconcile (environment, revision,
reconcile id). The level is configurable; the CLI's one-shot commands default to warnings only, since
their progress lines are their output.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json_output: bool | None = None) -> None:
    """Configure structlog (and the standard library's root logger) once per process."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = (not sys.stderr.isatty()) if json_output is None else json_output
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
