"""The processes of a local cluster: spawned detached with their logs in the cluster directory,
recorded (pid, executable, command) in its state, waited for until ready (a port clash told apart from
other start-up failures), and stopped by pid only while that pid still runs the executable we started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.devcluster.errors import DevClusterError
from reconciler.devcluster.state import ClusterState

Log = Callable[[str], None]

_PORT_CLASH = re.compile(r"address already in use|bind: address", re.IGNORECASE)


class PortClashError(Exception):
    """A component could not bind its port: another program took it."""

    def __init__(self, step: str, port: int) -> None:
        super().__init__(f"{step}: port {port} already in use")
        self.step = step
        self.port = port


def pid_runs(pid: int, executable: str) -> bool:
    """True when ``pid`` is a live (non-zombie) process running ``executable``.

    The executable is read from ``/proc/<pid>/exe`` (set by exec, unlike argv), so a recycled pid that
    runs another program is never taken for ours.
    """
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that exited
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and exe.removesuffix(" (deleted)") == executable


def spawn(
    directory: Path, logs: Path, state: ClusterState, name: str, executable: Path, args: list[str]
) -> None:
    """Start ``executable`` in its own session, logging to ``logs/<name>.log``; record it in ``state``
    (the caller saves the state)."""
    if not executable.is_file():
        raise DevClusterError(
            step=f"start {name}",
            message=f"{executable} does not exist; rebuild with `reconciler dev-cluster up`",
        )
    log_file = logs / f"{name}.log"
    with log_file.open("ab") as handle:
        process = subprocess.Popen(
            [str(executable), *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    state.pids[name] = process.pid
    state.executables[name] = os.path.realpath(executable)
    state.commands[name] = [str(executable), *args]


def wait_ready(
    state: ClusterState,
    log_file: Path,
    *,
    name: str,
    port: int | None,
    timeout: float,
    check: Callable[[], bool],
    what: str | None = None,
) -> None:
    """Wait until ``check`` passes; fail as soon as the process exits (a port clash on ``port`` raises
    ``PortClashError``) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if not pid_runs(state.pids[name], state.executables[name]):
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            if port is not None and _PORT_CLASH.search(text):
                raise PortClashError(f"start {name}", port)
            raise DevClusterError(
                step=f"start {name}", message="the process exited during start-up", log_file=log_file
            )
        if time.monotonic() > deadline:
            raise DevClusterError(
                step=f"start {name}",
                message=f"timed out after {timeout:.0f} s waiting for {what or name + ' to be ready'}",
                log_file=log_file,
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def signal_and_wait(pid: int, executable: str, signum: int, timeout: float) -> None:
    """Send ``signum`` to the process group of ``pid``; wait up to ``timeout`` s for it to end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
    deadline = time.monotonic() + timeout
    while pid_runs(pid, executable) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop(name: str, pid: int, executable: str, log: Log, grace: float) -> None:
    """SIGTERM one recorded process, SIGKILL it if it is still there after ``grace`` s."""
    if not pid_runs(pid, executable):
        return
    signal_and_wait(pid, executable, signal.SIGTERM, grace)
    if pid_runs(pid, executable):
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while pid_runs(pid, executable):
            time.sleep(0.05)
