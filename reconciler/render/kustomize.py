"""Run the pinned kustomize on one environment directory and parse its output into Manifests.

A ``Renderer`` owns a content-keyed cache: the key hashes every file the kustomization graph reads (as
listed by ``restrictions.check``), the kustomize version and the render options, so an unchanged tree
never renders twice while any change to an input renders again. kustomize runs with a timeout, an
output size cap, an empty HOME, no plugins and its default root-only load restrictor.

kustomize's error output reaches the CLI, logs, the status API, Events and Environment objects, and it
prints secretGenerator literals and env-file lines verbatim when they are malformed. So a failure's
message is scrubbed before it leaves this module: every string of every secretGenerator of the graph
(collected by ``restrictions.check``) and every builtin plugin configuration kustomize dumps is replaced
by ``[redacted]``, and a failure that concerns a secretGenerator names its file and generator instead of
quoting kustomize.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.objects import Manifest, ObjectKey
from reconciler.render.restrictions import LoadPolicy, RenderInputs, RestrictionError, SecretSource, check

_DUPLICATE = re.compile(r"already registered id: (?P<kind>[A-Za-z0-9]+)\.[^/\s]*/(?P<name>[^.\s']+)")
REDACTED = "[redacted]"
# "trouble configuring builtin X with config: `<the whole configuration as YAML>`: <reason>"
_CONFIG_DUMP = re.compile(r"with config: `.*?`(?=:|\s*$)", re.DOTALL)
# Go's %v of a []byte (kustomize prints an invalid env-file line that way): a run of byte values
_BYTE_LIST = re.compile(r"\[(?:\d{1,3} ){3,}\d{1,3}\]")
_SHORT = 4  # shorter sensitive strings are only redacted where they stand alone
_SECRET_REASONS = (
    ("expected key=value", "a literal is not of the form KEY=VALUE"),
    ("invalid utf8", "a line of an env file is not valid UTF-8"),
    ("illegally repeats the key", "it repeats a key"),
    ("must have a name", "it has no name"),
)


# libyaml's safe loader when PyYAML was built with it: parsing kustomize's output was a third of a
# no-op CLI sync's CPU with the pure-Python one (benchmarks/peers.py)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# kustomize's render time grows faster than linearly (65-82 s at 5,500 objects on 2 cores): the daemon's
# and the CLI's default
DEFAULT_TIMEOUT = 600.0


class RenderError(Exception):
    """A render failed: the message says which environment, what failed, and what to do."""


@dataclass(frozen=True)
class RenderOptions:
    """How to run kustomize for one environment."""

    kustomize: Path
    policy: LoadPolicy = field(default_factory=LoadPolicy)
    # kustomize's render time grows faster than linearly (1.6 s at 1,100 objects, 65-82 s at 5,500 on
    # our 2-core machines): generous by default, so a large environment renders with default settings
    timeout: float = DEFAULT_TIMEOUT
    max_output_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class RenderResult:
    """The parsed objects of one render, the cache key of its inputs, and whether it came from cache."""

    manifests: tuple[Manifest, ...]
    input_hash: str
    cached: bool
    duration: float


def parse_manifests(text: str, source: str) -> list[Manifest]:
    """Split a multi-document YAML stream into Manifests; List kinds are flattened.

    Every document must be a mapping with apiVersion, kind and metadata.name; the same object twice is
    an error naming both documents.
    """
    manifests: list[Manifest] = []
    seen: dict[ObjectKey, int] = {}
    try:
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RenderError(f"{source}: the rendered output is not valid YAML{where}") from None

    def add(body: Any, index: int) -> None:
        if body is None:
            return
        if not isinstance(body, dict):
            raise RenderError(f"{source}: document {index + 1} is not a mapping")
        kind = body.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(body.get("items"), list):
            for item in body["items"]:
                add(item, index)
            return
        missing = [name for name in ("apiVersion", "kind") if not body.get(name)]
        if not (body.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            raise RenderError(f"{source}: document {index + 1} has no {', '.join(missing)}")
        manifest = Manifest(body, f"{source}#{index + 1}")
        if manifest.key in seen:
            raise RenderError(
                f"{source}: {manifest.key} appears twice (documents {seen[manifest.key] + 1} and {index + 1})"
            )
        seen[manifest.key] = index
        manifests.append(manifest)

    for index, document in enumerate(documents):
        add(document, index)
    return manifests


def _duplicate_sources(error: str, files: Sequence[Path], root: Path) -> str:
    match = _DUPLICATE.search(error)
    if match is None:
        return ""
    kind, name = match.group("kind"), match.group("name")
    found: list[str] = []
    for path in sorted(files):
        with contextlib.suppress(OSError, yaml.YAMLError, UnicodeDecodeError):
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if (
                    isinstance(document, dict)
                    and document.get("kind") == kind
                    and (document.get("metadata") or {}).get("name") == name
                ):
                    found.append(str(path.relative_to(root)) if root in path.parents else str(path))
    if len(found) >= 2:
        return f"{kind}/{name} is defined twice: in {found[0]} and in {found[1]}"
    return f"{kind}/{name} is defined twice"


def scrub(text: str, sensitive: Iterable[str]) -> str:
    """``text`` with every sensitive string, builtin plugin configuration dump and byte listing replaced
    by ``[redacted]``. Strings shorter than a few characters are replaced only where they stand alone
    (not inside a word), so that a one-letter value does not garble the message."""
    text = _CONFIG_DUMP.sub(f"with config: {REDACTED}", text)
    for value in sorted({value for value in sensitive if value.strip()}, key=len, reverse=True):
        if len(value) >= _SHORT:
            text = text.replace(value, REDACTED)
        else:
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", REDACTED, text)
    return _BYTE_LIST.sub(REDACTED, text)


def _mentions(text: str, value: str) -> bool:
    if len(value) >= _SHORT:
        return value in text
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", text) is not None


def _secret_failure(error: str, scrubbed: str, secrets: Sequence[SecretSource]) -> str:
    """When kustomize's ``error`` concerns a secretGenerator, a message naming its file and generator
    and saying what is wrong without any of its contents (``scrubbed`` is the error already scrubbed of
    every sensitive string); else ""."""
    source = next((s for s in secrets if any(_mentions(error, entry) for entry in s.entries)), None)
    if source is None and "SecretGenerator" in error and len(secrets) == 1:
        source = secrets[0]
    if source is None:
        return ""
    generator = f"secretGenerator {source.name!r}" if source.name else "a secretGenerator"
    reason = next((text for marker, text in _SECRET_REASONS if marker in error), "")
    if not reason:
        reason = "kustomize said: " + _shorten(scrubbed)
    return f"{generator} in {source.file} could not be generated: {reason} (its values are not shown)"


def _shorten(message: str, limit: int = 2000) -> str:
    return message if len(message) <= limit else message[:limit] + " [truncated]"


class Renderer:
    """Renders environment directories, caching results by the content of their inputs.

    The cache keeps the latest render of each environment (directory and options) only, within
    ``cache_size`` entries: a re-sync of unchanged inputs renders nothing, and a long-running daemon's
    memory does not grow with the number of revisions it has synced (at 5,000 objects per render, 64
    old renders kept would be hundreds of MiB)."""

    def __init__(self, cache_size: int = 64) -> None:
        self._cache: OrderedDict[str, tuple[Manifest, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._latest: dict[tuple[str, str], str] = {}  # (environment, options) -> its cached key
        self.renders = 0  # kustomize executions, for tests and metrics

    @staticmethod
    def input_hash(inputs: Sequence[Path], root: Path, options: RenderOptions, environment: Path) -> str:
        """The cache key: kustomize binary, options, environment path and each input's content."""
        digest = hashlib.sha256()
        digest.update(str(options.kustomize.resolve()).encode())
        digest.update(repr((options.policy, options.max_output_bytes)).encode())
        digest.update(str(environment.resolve().relative_to(root.resolve())).encode())
        for path in sorted(inputs):
            digest.update(str(path.relative_to(root.resolve())).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def _inputs(
        self, root: Path, environment: Path, options: RenderOptions
    ) -> tuple[Path, Path, str, str, RenderInputs, frozenset[str]]:
        """Blocking part of a render: check the graph and hash its inputs (run in a thread)."""
        root = root.resolve()
        environment = (root / environment) if not environment.is_absolute() else environment
        resolved = environment.resolve()
        label = str(resolved.relative_to(root)) if root in resolved.parents else str(environment)
        try:
            inputs = check(root, environment, options.policy)
            key = self.input_hash(list(inputs.files), root, options, environment)
        except RestrictionError as exc:
            raise RenderError(f"render of {label} refused: {exc}") from None
        except OSError as exc:
            raise RenderError(
                f"render of {label} failed reading its inputs: {exc.strerror}: {exc.filename}"
            ) from None
        directories = frozenset(
            d.relative_to(root).as_posix() for d in inputs.directories if d == root or root in d.parents
        )
        return root, environment, label, key, inputs, directories

    def inputs_key(self, root: Path, environment: Path, options: RenderOptions) -> str:
        """The cache key of an environment's inputs, without rendering (blocking: run in a thread)."""
        return self._inputs(root, environment, options)[3]

    def inputs_of(self, root: Path, environment: Path, options: RenderOptions) -> tuple[str, frozenset[str]]:
        """The inputs key and the directories (repository-relative, POSIX) whose direct contents the
        render depends on: a commit that changes no path directly inside them leaves the key as it is.
        Blocking: run in a thread."""
        _, _, _, key, _, directories = self._inputs(root, environment, options)
        return key, directories

    async def render(self, root: Path, environment: Path, options: RenderOptions) -> RenderResult:
        """Render ``environment`` (a directory inside the repository ``root``)."""
        started = time.monotonic()
        root, environment, label, key, inputs, _ = await asyncio.to_thread(
            self._inputs, root, environment, options
        )
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return RenderResult(cached, key, True, time.monotonic() - started)
        output = await self._run(root, environment, label, options, inputs)
        manifests = tuple(parse_manifests(output, label))
        slot = (label, repr((options.kustomize, options.policy, options.max_output_bytes)))
        previous = self._latest.get(slot)
        if previous is not None and previous != key:
            self._cache.pop(previous, None)  # its inputs changed: the older render is not needed again
        self._latest[slot] = key
        self._cache[key] = manifests
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return RenderResult(manifests, key, False, time.monotonic() - started)

    async def _run(
        self,
        root: Path,
        environment: Path,
        label: str,
        options: RenderOptions,
        inputs: RenderInputs,
    ) -> str:
        self.renders += 1
        with tempfile.TemporaryDirectory(prefix="reconciler-render-") as home:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "XDG_CONFIG_HOME": home}
            args = [str(options.kustomize), "build", str(environment)]
            if options.policy.allow_helm:
                args.append("--enable-helm")
            if options.policy.allow_plugins:
                args.extend(["--enable-alpha-plugins", "--enable-exec"])
            try:
                process = await asyncio.create_subprocess_exec(
                    *args,
                    cwd=root,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise RenderError(
                    f"render of {label} failed: cannot run {options.kustomize}: {exc.strerror}"
                ) from None
            try:
                stdout, stderr = await asyncio.wait_for(
                    self._collect(process, options.max_output_bytes), options.timeout
                )
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise RenderError(
                    f"render of {label} timed out after {options.timeout:.0f} s (kustomize was still "
                    "running; a render this large needs a longer render timeout, or a smaller environment)"
                ) from None
            except _TooLargeError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise RenderError(
                    f"render of {label} produced more than {options.max_output_bytes} bytes; refusing it"
                ) from None
        if process.returncode != 0:
            raise RenderError(self._failure(label, root, process.returncode, stderr, inputs))
        return stdout.decode()

    @staticmethod
    def _failure(label: str, root: Path, code: int | None, stderr: bytes, inputs: RenderInputs) -> str:
        """The message of a failed render: kustomize's reason, scrubbed of every secret it may quote."""
        error = stderr.decode(errors="replace").strip()
        scrubbed = scrub(error, inputs.sensitive).replace(str(root) + "/", "")
        secret = _secret_failure(error, scrubbed, inputs.secrets)
        if secret:
            return f"render of {label} failed (kustomize exit {code}): {scrub(secret, inputs.sensitive)}"
        duplicate = _duplicate_sources(error, sorted(inputs.resource_files), root)
        if duplicate:
            return f"render of {label} failed: {scrub(duplicate, inputs.sensitive)}"
        return f"render of {label} failed (kustomize exit {code}): {_shorten(scrubbed)}"

    @staticmethod
    async def _collect(process: asyncio.subprocess.Process, limit: int) -> tuple[bytes, bytes]:
        assert process.stdout is not None
        assert process.stderr is not None
        chunks: list[bytes] = []
        size = 0

        async def read_stderr() -> bytes:
            assert process.stderr is not None
            data = await process.stderr.read(65536)
            rest = data
            while data:
                data = await process.stderr.read(65536)
                if len(rest) < 65536:
                    rest += data
            return rest

        stderr_task = asyncio.create_task(read_stderr())
        while True:
            chunk = await process.stdout.read(1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                stderr_task.cancel()
                raise _TooLargeError
            chunks.append(chunk)
        stderr = await stderr_task
        await process.wait()
        return b"".join(chunks), stderr


class _TooLargeError(Exception):
    pass
