"""A local mirror of the environments repository (gitpython), fetched on demand, with snapshots.

* ``fetch()`` clones (``--mirror``) once, then fetches, and returns the head commit of the branch.
  Credentials never appear on a command line: an HTTPS token travels as an ``http.extraHeader`` set
  through ``GIT_CONFIG_*`` environment variables, an SSH key through ``GIT_SSH_COMMAND`` with strict host
  key checking against the configured known_hosts. Git never prompts (``GIT_TERMINAL_PROMPT=0``) and
  every command has a timeout.
* ``snapshot(sha)`` checks one revision out into ``snapshots/<sha>/``, a directory that is never
  modified afterwards; renders read only from snapshots. The newest few are kept.
* Error messages redact credentials embedded in URLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import git

if TYPE_CHECKING:  # settings imports reconciler.source.verify: no import cycle at run time
    from reconciler.settings import RepositoryConfig

_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_KEEP_SNAPSHOTS = 4
_MAX_DERIVED_CHANGES = 500  # more changed paths than this: check the whole tree out instead
_TIMEOUT = 120


class GitError(Exception):
    """A Git operation failed; the message is safe to show (no credentials)."""


def redact_url(text: str) -> str:
    """Remove ``user:password@`` from URLs in ``text``."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


class GitSource:
    """The environments repository, mirrored under ``cache_dir``."""

    def __init__(self, config: RepositoryConfig, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.mirror = cache_dir / "mirror.git"
        self.snapshots = cache_dir / "snapshots"
        self.fetches = 0

    def _env(self) -> dict[str, str]:
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}
        credentials = self.config.credentials
        token = credentials.token()
        if token:
            basic = base64.b64encode(f"{credentials.username}:{token}".encode()).decode()
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
            )
        if credentials.ssh_key_file:
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i {credentials.ssh_key_file} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={credentials.known_hosts_file} -o BatchMode=yes"
            )
        return env

    def _fetch_blocking(self) -> str:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        try:
            if not (self.mirror / "HEAD").exists():
                shutil.rmtree(self.mirror, ignore_errors=True)
                partial = Path(tempfile.mkdtemp(prefix="mirror-", dir=self.cache_dir))
                git.Repo.clone_from(
                    self.config.url, partial, mirror=True, env=env, kill_after_timeout=_TIMEOUT
                )
                partial.rename(self.mirror)
            else:
                repo = git.Repo(self.mirror)
                repo.git.fetch("origin", "--prune", env=env, kill_after_timeout=_TIMEOUT)
            repo = git.Repo(self.mirror)
            sha: str = repo.git.rev_parse(f"refs/heads/{self.config.branch}^{{commit}}")
        except git.GitCommandError as exc:
            detail = redact_url(str(exc.stderr or exc).strip().replace("\n", " "))[:500]
            raise GitError(
                f"fetching {redact_url(self.config.url)} (branch {self.config.branch}) failed: {detail}"
            ) from None
        except (git.GitError, OSError) as exc:
            raise GitError(
                f"fetching {redact_url(self.config.url)} failed: {redact_url(str(exc))[:500]}"
            ) from None
        finally:
            self.fetches += 1
        return sha

    def has_commit(self, sha: str) -> bool:
        """True when the mirror holds commit ``sha``."""
        try:
            git.Repo(self.mirror).git.cat_file("-e", f"{sha}^{{commit}}")
        except (git.GitError, OSError, ValueError):
            return False
        return True

    async def fetch(self) -> str:
        """Fetch the remote and return the branch's head commit."""
        return await asyncio.to_thread(self._fetch_blocking)

    def _snapshot_blocking(self, sha: str) -> Path:
        target = self.snapshots / sha
        if target.is_dir():
            return target
        self.snapshots.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=self.snapshots))
        if self._derive(work, sha):
            work.rename(target)
            self._prune_snapshots(keep=target)
            return target
        index = work.with_suffix(".index")
        try:
            repo = git.Repo(self.mirror)
            repo.git.execute(
                ["git", f"--work-tree={work}", "checkout", "-f", sha, "--", "."],
                env={"GIT_INDEX_FILE": str(index)},
                kill_after_timeout=_TIMEOUT,
            )
            work.rename(target)
        except (git.GitError, OSError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise GitError(f"checking out {sha[:12]} failed: {redact_url(str(exc))[:500]}") from None
        finally:
            with contextlib.suppress(OSError):
                index.unlink()
        self._prune_snapshots(keep=target)
        return target

    def _derive(self, work: Path, sha: str) -> bool:
        """Build the snapshot of ``sha`` from the newest existing one: hard links to its files (never
        written through: a changed path is unlinked first) plus the paths that differ, read from Git.
        A few files change per commit, so this costs milliseconds where a full checkout of a large
        repository costs a large part of a second. False (and ``work`` emptied) when it cannot be done:
        the caller then checks the whole tree out."""
        bases = [p for p in self._newest_snapshots() if p.name != sha]
        if not bases:
            return False
        changed = self.changed_paths(bases[0].name, sha)
        if changed is None or len(changed) > _MAX_DERIVED_CHANGES:
            return False
        try:
            shutil.copytree(bases[0], work, symlinks=True, copy_function=os.link, dirs_exist_ok=True)
            repo = git.Repo(self.mirror)
            for path in changed:  # removals (and the old side of every change) first
                self._remove(work, work / path)
            listing = repo.git.ls_tree("-z", sha, "--", *changed) if changed else ""
            for entry in filter(None, listing.split("\0")):
                meta, path = entry.split("\t", 1)
                mode, kind, oid = meta.split()
                destination = work / path
                destination.parent.mkdir(parents=True, exist_ok=True)
                if kind == "commit":  # a submodule: checkout leaves an empty directory
                    destination.mkdir(exist_ok=True)
                    continue
                data = repo.odb.stream(bytes.fromhex(oid)).read()
                if mode == "120000":
                    destination.symlink_to(data.decode())
                else:
                    destination.write_bytes(data)
                    destination.chmod(0o755 if mode == "100755" else 0o644)
        except (git.GitError, OSError, ValueError):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            return False
        return True

    @staticmethod
    def _remove(root: Path, path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # git keeps no empty directories; neither does a fresh checkout
            parent = parent.parent

    def _newest_snapshots(self) -> list[Path]:
        """The finished snapshots (not those being built: their names start with "."), newest first."""
        return sorted(
            (p for p in self.snapshots.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )

    def _prune_snapshots(self, keep: Path) -> None:
        for old in self._newest_snapshots()[_KEEP_SNAPSHOTS:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    async def snapshot(self, sha: str) -> Path:
        """A directory holding exactly revision ``sha`` (created once, never modified)."""
        return await asyncio.to_thread(self._snapshot_blocking, sha)

    def changed_paths(self, old: str, new: str) -> list[str] | None:
        """Repository paths that differ between two commits (renames as delete plus add), or None when
        it cannot be told (an unknown commit): then callers must assume everything changed."""
        if not old or not new:
            return None
        try:
            out: str = git.Repo(self.mirror).git.diff("--name-only", "--no-renames", "-z", old, new)
        except (git.GitError, OSError, ValueError):
            return None
        return [path for path in out.split("\0") if path]

    def commit_info(self, sha: str) -> dict[str, str]:
        """Author and subject of a commit (for status and promotions)."""
        commit = git.Repo(self.mirror).commit(sha)
        return {"author": f"{commit.author.name} <{commit.author.email}>", "subject": str(commit.summary)}
