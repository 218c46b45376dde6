"""A local Git server for the demo, the tests and the benchmarks: ``git daemon`` serving every bare
repository under a directory over ``git://`` on loopback (pushes allowed), and the post-receive hook
that sends the daemon a signed webhook for every push."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def git(*args: str, cwd: Path, author: str = "reconciler demo", timeout: float = 120.0) -> str:
    """Run ``git`` in ``cwd`` as ``author`` (a local test identity, ``<author>@reconciler.invalid``);
    its stdout, stripped. Used by the demo and the benchmarks to build and push their repositories."""
    email = author.replace(" ", "-") + "@reconciler.invalid"
    identity = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email}
    identity |= {"GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": email}
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **identity},
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout.strip()


def serve(base: Path, port: int, *, timeout: float = 20.0) -> subprocess.Popen[bytes]:
    """Start ``git daemon`` for the repositories under ``base`` and return once it accepts connections."""
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"git daemon did not start listening on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def install_webhook_hook(bare: Path, webhook_url: str, secret_file: Path) -> None:
    """Make every push to ``bare`` post a signed GitHub-style webhook to ``webhook_url``."""
    hook = bare / "hooks" / "post-receive"
    command = f"{sys.executable} -m reconciler.hook --url {webhook_url} --secret-file {secret_file}"
    hook.write_text(f"#!/bin/sh\nexec {command}\n")
    hook.chmod(0o755)
