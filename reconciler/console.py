"""How the command line talks to people and to scripts (shared by ``cli``, ``commands`` and
``promotion.cli``).

Owns the options every command spells the same way (``-o table|json|yaml``, ``--log-level``,
``--server`` with ``RECONCILER_SERVER``), printing a result in the chosen format (rich tables for
people, JSON and YAML for scripts), ``error: ...`` messages (exit status 2), the "cannot reach the
daemon" advice, and the progress of a sync. Colour and live lines only when the stream is a terminal
(and never with ``NO_COLOR``); elsewhere plain, unwrapped lines, so pipes, logs and tests read the same
text on every machine.
"""

from __future__ import annotations

import enum
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Annotated, Any, TextIO

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "RECONCILER_SERVER"
FORMATS = ("table", "json", "yaml")
# widths for text that is not read on a terminal: never wrap a line a script or a test reads
_UNWRAPPED = 100_000
# values shown in colour in tables (on a terminal only)
STATUS_STYLES: Mapping[str, str] = {
    "Healthy": "green",
    "Synced": "green",
    "Ready": "green",
    "Succeeded": "green",
    "running": "green",
    "Progressing": "yellow",
    "Reconciling": "yellow",
    "OutOfSync": "yellow",
    "Pending": "yellow",
    "Approved": "cyan",
    "Degraded": "red",
    "Missing": "red",
    "Stalled": "red",
    "Failed": "red",
    "Rejected": "red",
    "stopped": "red",
    "degraded": "red",
}


class CommandError(Exception):
    """A problem the person can act on; printed as ``error: ...`` with exit status 2."""


class LogLevel(enum.StrEnum):
    """The log levels a one-shot command accepts."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _output_format(value: str) -> str:
    chosen = value.strip().lower()
    if chosen == "text":  # the name the human format had before (sync and the promotion commands)
        return "table"
    if chosen not in FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(FORMATS)}")
    return chosen


def _formats() -> list[str]:
    return list(FORMATS)


Output = Annotated[
    str,
    typer.Option(
        "-o",
        "--output",
        callback=_output_format,
        autocompletion=_formats,
        metavar="table|json|yaml",
        help="output format: table (for people), json or yaml (for scripts)",
    ),
]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option("--log-level", case_sensitive=False, help="log lines on stderr from this level up"),
]
Server = Annotated[
    str,
    typer.Option("--server", envvar=SERVER_ENV, show_envvar=True, help="the daemon's URL"),
]


def make_console(stream: TextIO) -> Console:
    """A rich console on ``stream``: colour on a terminal (rich honours NO_COLOR), no wrapping elsewhere."""
    terminal = stream.isatty()
    return Console(file=stream, highlight=False, width=None if terminal else _UNWRAPPED)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr (the prefix in red on a terminal)."""
    make_console(sys.stderr).print(
        Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, markup=False
    )


def daemon_unreachable(server: str, exc: BaseException) -> CommandError:
    """The error for a daemon that does not answer at all, saying what to check."""
    reason = getattr(exc, "reason", None) or exc
    return CommandError(
        f"cannot reach the daemon at {server}: is it running? set --server or {SERVER_ENV} ({reason})"
    )


def print_data(output: str, data: Any) -> None:
    """``data`` on stdout as YAML (``output`` "yaml") or as indented JSON."""
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")


def emit(output: str, data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON or YAML for scripts, or call ``human`` to print the table form."""
    if output == "table":
        human()
    else:
        print_data(output, data)


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], styles: Mapping[str, str] = STATUS_STYLES
) -> None:
    """A table on stdout: aligned columns, bold header; statuses in colour on a terminal."""
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold", show_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell, style=styles.get(cell, "")) for cell in row))
    console = make_console(sys.stdout)
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


_RENDERED = re.compile(r"^rendered (\d+) objects")
_TO_APPLY = re.compile(r"(\d+) to apply")
_APPLIED = re.compile(r"^stage (.+): applied (\d+) objects")
_HEALTHY = re.compile(r"^stage (.+): (\d+) objects healthy")


def _step(message: str) -> dict[str, Any]:
    """How a progress message of the engine moves the live display (a hint: unknown lines only print)."""
    if found := _RENDERED.search(message):
        return {"description": f"planning {found[1]} objects"}
    if found := _TO_APPLY.search(message):
        return {"description": "applying", "total": int(found[1]), "completed": 0}
    if found := _APPLIED.search(message):
        return {"description": f"stage {found[1]}: waiting for health", "advance": int(found[2])}
    if found := _HEALTHY.search(message):
        return {"description": f"stage {found[1]}: healthy"}
    return {"description": message.split(":", maxsplit=1)[0][:60]}


class SyncProgress:
    """Progress of one sync on stderr.

    On a terminal: every step as a line, under them a live line with a spinner, the objects applied of
    those to apply, and the time spent (so a long health wait shows that it is waiting, and on what).
    Elsewhere (pipes, CI, tests): exactly one plain line per step, as the engine reports it.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty() if live is None else live
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    @property
    def task(self) -> tuple[float, float | None, str] | None:
        """(completed, total, description) of the live line; None when printing plain lines."""
        if self._bar is None or self._task is None:
            return None
        task = self._bar.tasks[0]
        return task.completed, task.total, task.description

    def __enter__(self) -> SyncProgress:
        if self._live:
            console = Console(file=self._stream, highlight=False, force_terminal=True)
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("rendering", total=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, message: str) -> None:
        if self._bar is None or self._task is None:
            self._stream.write(message + "\n")
            self._stream.flush()
            return
        self._bar.console.print(Text(message), soft_wrap=True)
        self._bar.update(self._task, **_step(message))
