"""The one error type of the local control plane: which step failed, why, and where the log is."""

from __future__ import annotations

from pathlib import Path

_TAIL_LINES = 15


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class DevClusterError(Exception):
    """A step of building, starting or stopping the local cluster failed.

    The message names the step, the reason and, when a process or a build wrote one, the log file
    together with its last lines, so the user never has to read a traceback.
    """

    def __init__(self, step: str, message: str, log_file: Path | None = None) -> None:
        self.step = step
        self.reason = message
        self.log_file = log_file
        text = f"{step}: {message}"
        if log_file is not None:
            text += f"\n  log file: {log_file}"
            tail = _tail(log_file)
            if tail:
                text += "\n  last lines:\n" + "\n".join(f"    {line}" for line in tail.splitlines())
        super().__init__(text)
