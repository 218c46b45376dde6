"""structlog configuration: JSON lines when stderr is not a terminal, readable lines when it is.

Every line carries the context variables bound for the current reconcile (environment, revision,
reconcile id). The level is configurable; the CLI's one-shot commands default to warnings only, since
their progress lines are their output.
"""

from __future__ import annotations

import logging
import sys

import structlog

_HANDLER = "reconciler"


def configure(level: str = "info", *, json_output: bool | None = None) -> None:
    """Configure structlog (and the standard library's root logger) once per process.

    Lines of other libraries that log through ``logging`` (aiohttp, asyncio) are rendered the same way,
    so a log collector reading the daemon's JSON lines never meets a plain-text line.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = (not sys.stderr.isatty()) if json_output is None else json_output
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER] + [handler]
    root.setLevel(max(numeric, logging.WARNING))
