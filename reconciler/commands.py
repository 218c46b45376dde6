"""The daemon's commands (``run``, ``status``) and the engine's one-shot commands (``render``, ``diff``,
``sync``): their options, and how their results are printed.

``render`` needs no cluster; ``diff`` and ``sync`` talk to the cluster of a kubeconfig. Exit codes:
``diff`` 0 = no changes, 1 = changes, 2 = error; ``sync`` 0 only when everything was applied and is
healthy, 1 when the sync failed or the environment is not healthy, 2 on usage or connection errors.
The engine, the Kubernetes client and the daemon are imported when a command runs, so ``--help`` and
shell completion start fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from reconciler import logs
from reconciler.console import (
    DEFAULT_SERVER,
    CommandError,
    LogLevel,
    LogLevelOption,
    Output,
    Server,
    SyncProgress,
    daemon_unreachable,
    emit,
    print_data,
    print_table,
)
from reconciler.render.kustomize import DEFAULT_TIMEOUT as DEFAULT_RENDER_TIMEOUT

if TYPE_CHECKING:
    from reconciler.kube.client import KubeClient
    from reconciler.render import RenderOptions
    from reconciler.sync import SyncResult

__all__ = ["CommandError", "find_kustomize", "register", "repository_root"]

DAEMON = "Daemon"
ENGINE = "Engine (one-shot, no daemon)"

PathArgument = Annotated[
    Path, typer.Argument(metavar="PATH", help="environment directory (a kustomization)", show_default=False)
]
RepoRoot = Annotated[
    str | None,
    typer.Option("--repo-root", help="directory renders may read (default: the Git work tree of PATH)"),
]
AllowRemoteBases = Annotated[bool, typer.Option("--allow-remote-bases", help="allow remote kustomize bases")]
AllowHelm = Annotated[bool, typer.Option("--allow-helm", help="allow helm chart inflation")]
AllowPlugins = Annotated[bool, typer.Option("--allow-plugins", help="allow KRM/exec function plugins")]
RenderTimeout = Annotated[float, typer.Option("--render-timeout", help="kustomize timeout, seconds")]
Kubeconfig = Annotated[
    str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
]
KubeContext = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: the current one)")
]
EnvironmentName = Annotated[
    str | None,
    typer.Option(
        "--environment",
        help="environment name: ownership marks and inventory (default: PATH's directory name)",
    ),
]


def find_kustomize() -> Path:
    """The pinned kustomize: $RECONCILER_KUSTOMIZE, the dev-cluster cache, then PATH."""
    from reconciler.devcluster.build import toolchain_paths  # noqa: PLC0415 - only when rendering

    explicit = os.environ.get("RECONCILER_KUSTOMIZE")
    if explicit:
        return Path(explicit)
    cached = toolchain_paths().kustomize
    if cached.is_file():
        return cached
    found = shutil.which("kustomize")
    if found:
        return Path(found)
    raise CommandError(
        "kustomize not found: run `reconciler dev-cluster build` (builds the pinned version into the cache), "
        "put kustomize on PATH, or set RECONCILER_KUSTOMIZE"
    )


def repository_root(path: Path, explicit: str | None) -> Path:
    """The directory renders may read: --repo-root, else the Git work tree of PATH, else its parent."""
    if explicit:
        return Path(explicit).resolve()
    try:
        top = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        if top:
            return Path(top).resolve()
    except (OSError, subprocess.SubprocessError):
        pass
    return path.resolve().parent


@dataclass(frozen=True)
class Source:
    """What to render: an environment directory, the repository it may read, the render options."""

    path: Path
    root: Path
    allow_remote_bases: bool = False
    allow_helm: bool = False
    allow_plugins: bool = False
    timeout: float = 60.0

    @classmethod
    def of(cls, path: Path, repo_root: str | None, **flags: Any) -> Source:
        """Resolve PATH (it must be a directory) and the repository root."""
        resolved = path.resolve()
        if not resolved.is_dir():
            raise CommandError(f"{resolved} is not a directory")
        return cls(resolved, repository_root(resolved, repo_root), **flags)

    def render_options(self) -> RenderOptions:
        """The renderer's options: the pinned kustomize and the load restrictions."""
        from reconciler.render import RenderOptions  # noqa: PLC0415
        from reconciler.render.restrictions import LoadPolicy  # noqa: PLC0415

        policy = LoadPolicy(
            allow_remote_bases=self.allow_remote_bases,
            allow_helm=self.allow_helm,
            allow_plugins=self.allow_plugins,
        )
        return RenderOptions(kustomize=find_kustomize(), policy=policy, timeout=self.timeout)


@dataclass(frozen=True)
class Target:
    """Where ``diff`` and ``sync`` write: a kubeconfig, a context, an environment name."""

    kubeconfig: str | None
    context: str | None
    environment: str | None

    async def client(self) -> KubeClient:
        """A client of the kubeconfig's cluster; a missing or broken kubeconfig is a CommandError."""
        from reconciler.kube.client import KubeClient  # noqa: PLC0415

        try:
            path = self.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
            if path and not await asyncio.to_thread(os.path.isfile, path):
                raise CommandError(f"cannot load kubeconfig {path}: the file does not exist")
            return await KubeClient.from_kubeconfig(path, self.context)
        except CommandError:
            raise
        except Exception as exc:  # kubeconfig loading raises many types
            raise CommandError(f"cannot load kubeconfig {self.kubeconfig or '(default)'}: {exc}") from None


def _run_engine(log_level: LogLevel, work: Coroutine[Any, Any, int]) -> None:
    """Run one engine command; Kubernetes errors become CommandErrors, exit codes typer.Exit."""
    from reconciler.kube.errors import KubeError  # noqa: PLC0415

    logs.configure(log_level.value)
    try:
        code = asyncio.run(work)
    except KubeError as exc:
        raise CommandError(str(exc)) from None
    if code:
        raise typer.Exit(code)


async def _render(source: Source, redact_secrets: bool, output: str) -> int:
    from reconciler.plan.diff import redact  # noqa: PLC0415
    from reconciler.plan.ordering import WaveError, plan_stages  # noqa: PLC0415
    from reconciler.render import Renderer, RenderError  # noqa: PLC0415

    try:
        result = await Renderer().render(source.root, source.path, source.render_options())
        stages = plan_stages(list(result.manifests))
    except (RenderError, WaveError) as exc:
        raise CommandError(str(exc)) from None
    if output == "table":
        rows = [
            (stage.name, m.key.kind, m.key.namespace or "-", m.key.name)
            for stage in stages
            for m in stage.manifests
        ]
        print_table(("STAGE", "KIND", "NAMESPACE", "NAME"), rows)
        return 0
    documents = [redact(m.body) if redact_secrets else m.body for stage in stages for m in stage.manifests]
    if output == "json":
        sys.stdout.write(json.dumps(documents, indent=2) + "\n")
    else:  # byte for byte what render always printed
        sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False))
    return 0


def render(
    path: PathArgument,
    repo_root: RepoRoot = None,
    allow_remote_bases: AllowRemoteBases = False,
    allow_helm: AllowHelm = False,
    allow_plugins: AllowPlugins = False,
    render_timeout: RenderTimeout = DEFAULT_RENDER_TIMEOUT,
    redact_secrets: Annotated[
        bool, typer.Option("--redact-secrets", help="replace Secret values by fingerprints")
    ] = False,
    output: Output = "yaml",
    log_level: LogLevelOption = LogLevel.WARNING,
) -> None:
    """Print an environment's objects in apply order (needs no cluster)."""
    source = Source.of(
        path,
        repo_root,
        allow_remote_bases=allow_remote_bases,
        allow_helm=allow_helm,
        allow_plugins=allow_plugins,
        timeout=render_timeout,
    )
    _run_engine(log_level, _render(source, redact_secrets, output))


async def _sync_once(
    source: Source, target: Target, *, dry_run: bool, progress: SyncProgress | None = None, **options: Any
) -> SyncResult:
    """Render and sync (or dry-run) once; progress lines only for real syncs, as before."""
    from reconciler.plan.prune import PruneOptions  # noqa: PLC0415
    from reconciler.sync import Engine, SyncOptions  # noqa: PLC0415

    render_options = source.render_options()
    client = await target.client()
    async with client:
        engine = Engine(client)
        sync_options = SyncOptions(
            environment=target.environment or source.path.name,
            revision=options.get("revision", ""),
            prune=PruneOptions(
                enabled=options.get("prune", True), allow_mass_prune=options.get("allow_mass_prune", False)
            ),
            dry_run=dry_run,
            diffs=dry_run,  # only `diff` prints diffs; `sync` would YAML-dump every object for nothing
            health_timeout=options.get("timeout", 300.0),
        )
        return await engine.sync_directory(
            source.root,
            source.path,
            render_options,
            sync_options,
            _quiet if dry_run or not progress else progress,
        )


def _quiet(_: str) -> None:
    pass


def _object_rows(result: SyncResult, *, diffs: bool = False) -> list[dict[str, str]]:
    rows = []
    for entry in result.changeset.entries:
        row = {"object": str(entry.key), "action": entry.action.value, "message": entry.message}
        if diffs:
            row["diff"] = entry.diff
        rows.append(row)
    return rows


async def _diff(source: Source, target: Target, output: str) -> int:
    from reconciler.objects import Action  # noqa: PLC0415

    result = await _sync_once(source, target, dry_run=True)
    if result.condition == "Stalled":
        raise CommandError(result.message)
    written = (Action.CREATED, Action.CONFIGURED, Action.DELETED)
    changed = any(entry.action in written for entry in result.changeset.entries)
    if output != "table":
        print_data(
            output, {**result.summary(), "changed": changed, "objects": _object_rows(result, diffs=True)}
        )
        return 1 if changed else 0
    for entry in result.changeset.entries:
        if entry.action in written:
            sys.stdout.write(entry.diff if entry.diff.endswith("\n") or not entry.diff else entry.diff + "\n")
        elif entry.action == Action.SKIPPED:
            print(f"# {entry.key}: {entry.message}", file=sys.stderr)
    if result.prune_blocked:
        print(f"# prune blocked: {result.prune_blocked}", file=sys.stderr)
    print(result.changeset.summary(), file=sys.stderr)
    return 1 if changed else 0


def diff(
    path: PathArgument,
    repo_root: RepoRoot = None,
    allow_remote_bases: AllowRemoteBases = False,
    allow_helm: AllowHelm = False,
    allow_plugins: AllowPlugins = False,
    render_timeout: RenderTimeout = DEFAULT_RENDER_TIMEOUT,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    environment: EnvironmentName = None,
    output: Output = "table",
    log_level: LogLevelOption = LogLevel.WARNING,
) -> None:
    """Server-side dry-run diff against the cluster (exit 0: no changes, 1: changes, 2: error)."""
    source = Source.of(
        path,
        repo_root,
        allow_remote_bases=allow_remote_bases,
        allow_helm=allow_helm,
        allow_plugins=allow_plugins,
        timeout=render_timeout,
    )
    _run_engine(log_level, _diff(source, Target(kubeconfig, context, environment), output))


async def _sync(source: Source, target: Target, output: str, progress: SyncProgress, **options: Any) -> int:
    from reconciler.objects import Action  # noqa: PLC0415

    with progress:
        result = await _sync_once(source, target, progress=progress, **options)
    if output != "table":
        print_data(output, {**result.summary(), "objects": _object_rows(result)})
        return 0 if result.ok else 1
    rows = [entry for entry in result.changeset.entries if entry.action != Action.UNCHANGED]
    for entry in rows:
        suffix = f" ({entry.message})" if entry.message else ""
        print(f"{entry.action.value:<10} {entry.key}{suffix}")
    print(
        f"{result.environment}: {'Synced' if result.synced else 'OutOfSync'}, {result.health.value}, "
        f"{result.condition} ({result.reason}): {result.message}"
    )
    return 0 if result.ok else 1


def sync(
    path: PathArgument,
    repo_root: RepoRoot = None,
    allow_remote_bases: AllowRemoteBases = False,
    allow_helm: AllowHelm = False,
    allow_plugins: AllowPlugins = False,
    render_timeout: RenderTimeout = DEFAULT_RENDER_TIMEOUT,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    environment: EnvironmentName = None,
    no_prune: Annotated[bool, typer.Option("--no-prune", help="apply only; delete nothing")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and report; write nothing")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="health wait per stage, seconds")] = 300.0,
    revision: Annotated[
        str, typer.Option("--revision", help="revision recorded in the inventory and status")
    ] = "",
    allow_mass_prune: Annotated[
        bool,
        typer.Option(
            "--allow-mass-prune",
            help="override the prune circuit breaker (empty render or more than 50% of the inventory)",
        ),
    ] = False,
    output: Output = "table",
    log_level: LogLevelOption = LogLevel.WARNING,
) -> None:
    """One-shot sync of an environment; exit 0 only when applied, pruned and healthy."""
    source = Source.of(
        path,
        repo_root,
        allow_remote_bases=allow_remote_bases,
        allow_helm=allow_helm,
        allow_plugins=allow_plugins,
        timeout=render_timeout,
    )
    # live lines on a terminal, unless log lines (info, debug) would write through them
    progress = SyncProgress(live=sys.stderr.isatty() and log_level in (LogLevel.WARNING, LogLevel.ERROR))
    work = _sync(
        source,
        Target(kubeconfig, context, environment),
        output,
        progress,
        dry_run=dry_run,
        prune=not no_prune,
        timeout=timeout,
        revision=revision,
        allow_mass_prune=allow_mass_prune,
    )
    _run_engine(log_level, work)


def run(
    config: Annotated[
        Path,
        typer.Option(
            "--config", help="configuration file (YAML); see deploy/ and README", show_default=False
        ),
    ],
    insecure_no_webhook_secret: Annotated[
        bool,
        typer.Option(
            "--insecure-no-webhook-secret",
            help="accept unsigned webhooks when no secret is configured (local development only)",
        ),
    ] = False,
) -> None:
    """Run the daemon (Git source, webhooks, work queue, leader election)."""
    from reconciler import daemon, settings  # noqa: PLC0415 - keep the other commands light
    from reconciler.config_fields import ConfigError  # noqa: PLC0415

    try:
        loaded = settings.load(config, insecure_no_webhook_secret=insecure_no_webhook_secret)
    except ConfigError as exc:
        raise CommandError(f"invalid configuration: {exc}") from None
    logs.configure(loaded.log_level)
    if loaded.webhooks.insecure_no_secret or insecure_no_webhook_secret:
        import structlog  # noqa: PLC0415

        structlog.get_logger("reconciler").warning(
            "INSECURE: webhooks are accepted without a signature; anyone who can reach "
            f"{loaded.listen} can trigger syncs. Use this for local development only."
        )
    kustomize = loaded.kustomize or find_kustomize()
    asyncio.run(daemon.run(loaded, kustomize))


def fetch_environments(server: str) -> list[dict[str, Any]]:
    """Every environment's status from the daemon at ``server``; errors say what to check."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url = server.rstrip("/") + "/api/v1/environments"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the operator's own daemon
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise CommandError(f"GET {url}: {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise daemon_unreachable(server, exc) from None
    try:
        environments = json.loads(body)["environments"]
    except (ValueError, KeyError, TypeError):
        environments = None
    if not isinstance(environments, list):
        raise CommandError(f"GET {url}: not a reconciler daemon's answer (no environments list)")
    return environments


def _status_row(env: dict[str, Any]) -> tuple[str, ...]:
    message = str(env.get("message") or env.get("reason") or "")
    if env.get("gitStale"):
        message = f"[git stale] {message}"
    revision = str(env.get("revision") or "")[:12] or "-"
    columns = ("sync", "health", "condition")
    cluster, owner = str(env.get("cluster") or "-"), str(env.get("owner") or "-")
    return (str(env["name"]), cluster, owner, revision, *(str(env.get(c, "?")) for c in columns), message)


def status(server: Server = DEFAULT_SERVER, output: Output = "table") -> None:
    """Every environment's cluster, owner (the replica syncing it, with sharding), revision, sync, health
    and condition, from a running daemon."""
    environments = fetch_environments(server)
    emit(
        output,
        environments,
        lambda: print_table(
            ("ENVIRONMENT", "CLUSTER", "OWNER", "REVISION", "SYNC", "HEALTH", "CONDITION", "MESSAGE"),
            [_status_row(env) for env in environments],
        ),
    )


def register(app: typer.Typer) -> None:
    """Add run and status (daemon) and render, diff and sync (engine) to the top-level command."""
    app.command("run", rich_help_panel=DAEMON)(run)
    app.command("status", rich_help_panel=DAEMON)(status)
    app.command("render", rich_help_panel=ENGINE)(render)
    app.command("diff", rich_help_panel=ENGINE)(diff)
    app.command("sync", rich_help_panel=ENGINE)(sync)
