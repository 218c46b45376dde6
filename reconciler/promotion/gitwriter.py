"""The Git side of promotions: reading promoted values at a revision, and the one commit per promotion.

Reads (``show``, ``authors``, ``is_ancestor``) use the daemon's mirror. Writes use a separate work
clone under ``<cache>/promotions/work``: fetch, hard-reset to the remote branch, apply the edit, commit
with the ``Promotion: <id>`` trailer, push without force. A rejected push (someone pushed first) is
answered by fetching, resetting onto the new head and applying the edit again, never by forcing. Before
writing, the remote branch is searched for the trailer, so a promotion whose commit already landed (the
daemon died after the push) is never committed twice. With a signing key (``promotions.signing_key``)
the commit is SSH-signed by the daemon's own key (``gpgsig``, namespace ``git``, as ``git commit -S``
with ``gpg.format=ssh`` makes it), so a repository that only syncs verified commits accepts it.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import git
from gitdb import IStream

from reconciler.promotion import sshsig
from reconciler.source.git import GitError, GitSource, redact_url

_TIMEOUT = 120
_PUSH_ATTEMPTS = 6

Edit = Callable[[Path], list[str]]


class GitWriter:
    """Promotion commits to the environments repository."""

    def __init__(
        self, source: GitSource, author_name: str, author_email: str, signing_key: Path | None = None
    ) -> None:
        self.source = source
        self.work = source.cache_dir / "promotions" / "work"
        self.author = git.Actor(author_name, author_email)
        self.branch = source.config.branch
        self.signing_key = signing_key

    # -- reads (the mirror) -------------------------------------------------------------------------
    def _mirror(self) -> git.Repo:
        return git.Repo(self.source.mirror)

    def show(self, revision: str, path: str) -> str | None:
        """The text of ``path`` at ``revision``, or None when it does not exist there."""
        try:
            text: str = self._mirror().git.show(f"{revision}:{path}")
        except git.GitCommandError:
            return None
        return text + "\n" if text and not text.endswith("\n") else text

    def is_ancestor(self, ancestor: str, revision: str) -> bool:
        """True when ``ancestor`` is ``revision`` or one of its ancestors."""
        if not ancestor or not revision:
            return False
        try:
            self._mirror().git.merge_base("--is-ancestor", ancestor, revision)
        except git.GitCommandError:
            return False
        return True

    def authors(self, path: str, base: str, head: str, limit: int = 200) -> list[str]:
        """E-mail addresses and names of the authors of commits touching ``path`` in ``base..head``
        (the last ``limit`` commits touching it up to ``head`` when there is no usable base)."""
        range_ = f"{base}..{head}" if base and self.is_ancestor(base, head) else head
        try:
            out: str = self._mirror().git.log(
                range_, f"-n{limit}", "--format=%ae%x09%an", "--no-merges", "--", path
            )
        except git.GitCommandError as exc:
            raise GitError(f"reading the history of {path}: {str(exc.stderr).strip()[:300]}") from None
        people: list[str] = []
        for line in out.splitlines():
            for part in line.split("\t"):
                if part and part not in people:
                    people.append(part)
        return people

    # -- the commit (the work clone) ----------------------------------------------------------------
    def _run(self, repo: git.Repo, *args: str) -> str:
        out: str = repo.git.execute(
            ["git", *args], env=self.source._env(), kill_after_timeout=_TIMEOUT, with_extended_output=False
        )
        return out

    def _fresh(self) -> git.Repo:
        """The work clone reset to the remote branch head."""
        if not (self.work / ".git").exists():
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.parent.mkdir(parents=True, exist_ok=True)
            git.Repo.clone_from(
                self.source.config.url,
                self.work,
                branch=self.branch,
                env=self.source._env(),
                kill_after_timeout=_TIMEOUT,
            )
        repo = git.Repo(self.work)
        self._run(repo, "fetch", "origin", f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}")
        self._run(repo, "checkout", "-q", "-B", self.branch, f"origin/{self.branch}")
        self._run(repo, "reset", "-q", "--hard", f"origin/{self.branch}")
        self._run(repo, "clean", "-q", "-fdx")
        return repo

    def _find(self, repo: git.Repo, promotion: str) -> str:
        out = self._run(
            repo,
            "log",
            f"origin/{self.branch}",
            "-n",
            "1",
            "--format=%H",
            "-F",
            f"--grep=Promotion: {promotion}",
        )
        return out.strip()

    def commit(self, promotion: str, edit: Edit, message: str) -> tuple[str, bool]:
        """Write and push the commit of ``promotion`` (once); returns (sha, created now).

        ``edit`` changes files under the given work tree and returns the paths it changed (empty when
        the target already holds the promoted values: then nothing is committed and sha is "").
        """
        last = ""
        for _ in range(_PUSH_ATTEMPTS):
            try:
                repo = self._fresh()
                existing = self._find(repo, promotion)
                if existing:
                    return existing, False
                changed = edit(self.work)
                if not changed:
                    return "", False
                repo.index.add(changed)
                sha = self._commit(repo, message)
                try:
                    self._run(repo, "push", "origin", f"HEAD:refs/heads/{self.branch}")
                except git.GitCommandError as exc:
                    last = _detail(exc)
                    if "rejected" in last or "fetch first" in last or "non-fast-forward" in last:
                        continue  # someone pushed first: rebase our edit onto their commit
                    raise
                return sha, True
            except (git.GitError, OSError) as exc:
                raise GitError(f"committing promotion {promotion}: {_detail(exc)}") from None
        raise GitError(f"committing promotion {promotion}: the push kept being rejected ({last})")

    def _commit(self, repo: git.Repo, message: str) -> str:
        """Commit the index on HEAD (signed with ``signing_key`` when there is one); the new sha."""
        if self.signing_key is None:
            return str(repo.index.commit(message, author=self.author, committer=self.author).hexsha)
        tree = repo.index.write_tree()
        person = f"{self.author.name} <{self.author.email}> {int(time.time())} +0000"
        text = message if message.endswith("\n") else message + "\n"
        headers = (
            f"tree {tree.hexsha}\nparent {repo.head.commit.hexsha}\nauthor {person}\ncommitter {person}\n"
        )
        armored = sshsig.sign_with_key(self.signing_key, f"{headers}\n{text}".encode(), namespace="git")
        signature = armored.rstrip("\n").replace("\n", "\n ")
        signed = f"{headers}gpgsig {signature}\n\n{text}"
        data = signed.encode()
        stored = repo.odb.store(IStream(b"commit", len(data), io.BytesIO(data)))
        sha = stored.hexsha.decode() if isinstance(stored.hexsha, bytes) else str(stored.hexsha)
        self._run(repo, "update-ref", f"refs/heads/{self.branch}", sha)
        return sha

    def find_head(self) -> str:
        """The remote branch head as the work clone last fetched it."""
        try:
            return self._run(git.Repo(self.work), "rev-parse", f"origin/{self.branch}").strip()
        except (git.GitError, OSError) as exc:
            raise GitError(f"reading the branch head: {_detail(exc)}") from None

    async def commit_async(self, promotion: str, edit: Edit, message: str) -> tuple[str, bool]:
        """``commit`` in a thread."""
        return await asyncio.to_thread(self.commit, promotion, edit, message)


def _detail(exc: BaseException) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip().replace("\n", " ")
    return redact_url(text)[:500]
