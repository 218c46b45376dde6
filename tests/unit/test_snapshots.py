"""Snapshots derived from the previous one (hard links plus the changed paths) equal a fresh checkout."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from reconciler.settings import RepositoryConfig
from reconciler.source import GitSource

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@x.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@x.invalid",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root``: kind plus content, symlink target or mode."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir", "")
        else:
            executable = bool(path.stat().st_mode & stat.S_IXUSR)
            found[name] = ("file", f"{executable}:{path.read_text()}")
    return found


def commit(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def test_derived_snapshots_equal_a_full_checkout(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "base").mkdir()
    (work / "base/app.yaml").write_text("v1\n")
    (work / "base/run.sh").write_text("#!/bin/sh\n")
    (work / "base/run.sh").chmod(0o755)
    (work / "gone").mkdir()
    (work / "gone/only.yaml").write_text("x\n")
    (work / "swap").write_text("a file that becomes a directory\n")
    (work / "link.yaml").symlink_to("base/app.yaml")
    first = commit(work, "first")
    (work / "base/app.yaml").write_text("v2\n")  # edited (the old snapshot's hard link must not change)
    (work / "base/run.sh").chmod(0o644)  # mode change only
    (work / "gone/only.yaml").unlink()  # its directory disappears
    (work / "swap").unlink()
    (work / "swap").mkdir()
    (work / "swap/inner.yaml").write_text("now inside\n")
    (work / "link.yaml").unlink()
    (work / "link.yaml").symlink_to("swap/inner.yaml")  # re-pointed
    (work / "new.yaml").write_text("added\n")
    second = commit(work, "second")

    source = GitSource(RepositoryConfig(url=f"file://{work}", branch="main"), tmp_path / "cache")
    assert source._fetch_blocking() == second
    old = source._snapshot_blocking(first)
    before = tree(old)
    derived = source._snapshot_blocking(second)
    assert not (source.snapshots / f"{second}.index").exists()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git("--work-tree", str(fresh), "checkout", second, "--", ".", cwd=work)
    assert tree(derived) == tree(fresh)
    assert tree(old) == before  # the older snapshot is untouched
    assert (derived / "base/app.yaml").stat().st_ino != (old / "base/app.yaml").stat().st_ino
    # files the commit did not touch are shared, not copied
    assert (derived / "new.yaml").exists()
    (work / "untouched.yaml").write_text("u\n")
    third = commit(work, "third")
    source._fetch_blocking()
    third_snapshot = source._snapshot_blocking(third)
    assert (third_snapshot / "swap/inner.yaml").stat().st_ino == (derived / "swap/inner.yaml").stat().st_ino
