"""The engine's one-shot commands: ``render``, ``diff`` and ``sync`` (argument handling and output).

``render`` needs no cluster; ``diff`` and ``sync`` talk to the cluster of a kubeconfig. Exit codes:
``diff`` 0 = no changes, 1 = changes, 2 = error; ``sync`` 0 only when everything was applied and is
healthy, 1 when the sync failed or the environment is not healthy, 2 on usage or connection errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from reconciler import logs
from reconciler.config_fields import ConfigError
from reconciler.devcluster.build import toolchain_paths
from reconciler.kube.client import KubeClient
from reconciler.kube.errors import KubeError
from reconciler.objects import Action
from reconciler.plan.diff import redact
from reconciler.plan.ordering import WaveError, plan_stages
from reconciler.plan.prune import PruneOptions
from reconciler.promotion import cli as promotion_cli
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.render.restrictions import LoadPolicy
from reconciler.sync import Engine, SyncOptions, SyncResult


class CommandError(Exception):
    """A usage or environment problem, printed as ``error: ...`` with exit status 2."""


def find_kustomize() -> Path:
    """The pinned kustomize: $RECONCILER_KUSTOMIZE, the dev-cluster cache, then PATH."""
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


def _render_options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(
        kustomize=find_kustomize(),
        policy=LoadPolicy(
            allow_remote_bases=args.allow_remote_bases,
            allow_helm=args.allow_helm,
            allow_plugins=args.allow_plugins,
        ),
        timeout=args.render_timeout,
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _render(args: argparse.Namespace) -> int:
    try:
        result = await Renderer().render(args.root, args.path, _render_options(args))
        stages = plan_stages(list(result.manifests))
    except (RenderError, WaveError) as exc:
        raise CommandError(str(exc)) from None
    documents = [
        redact(m.body) if args.redact_secrets else m.body for stage in stages for m in stage.manifests
    ]
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False))
    return 0


async def _client(args: argparse.Namespace) -> KubeClient:
    try:
        path = args.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        if path and not await asyncio.to_thread(os.path.isfile, path):
            raise CommandError(f"cannot load kubeconfig {path}: the file does not exist")
        return await KubeClient.from_kubeconfig(path, args.context)
    except CommandError:
        raise
    except Exception as exc:  # kubeconfig loading raises many types
        raise CommandError(f"cannot load kubeconfig {args.kubeconfig or '(default)'}: {exc}") from None


def _environment_name(args: argparse.Namespace) -> str:
    return str(args.environment or args.path.name)


async def _run_sync(args: argparse.Namespace, *, dry_run: bool) -> SyncResult:
    render_options = _render_options(args)
    client = await _client(args)
    async with client:
        engine = Engine(client)
        options = SyncOptions(
            environment=_environment_name(args),
            revision=getattr(args, "revision", "") or "",
            prune=PruneOptions(
                enabled=not getattr(args, "no_prune", False),
                allow_mass_prune=getattr(args, "allow_mass_prune", False),
            ),
            dry_run=dry_run,
            health_timeout=getattr(args, "timeout", 300.0),
        )
        progress = _progress if not dry_run else (lambda _: None)
        return await engine.sync_directory(args.root, args.path, render_options, options, progress)


async def _diff(args: argparse.Namespace) -> int:
    result = await _run_sync(args, dry_run=True)
    if result.condition == "Stalled":
        print(f"error: {result.message}", file=sys.stderr)
        return 2
    changed = False
    for entry in result.changeset.entries:
        if entry.action in (Action.CREATED, Action.CONFIGURED, Action.DELETED):
            changed = True
            sys.stdout.write(entry.diff if entry.diff.endswith("\n") or not entry.diff else entry.diff + "\n")
        elif entry.action == Action.SKIPPED:
            print(f"# {entry.key}: {entry.message}", file=sys.stderr)
    if result.prune_blocked:
        print(f"# prune blocked: {result.prune_blocked}", file=sys.stderr)
    print(result.changeset.summary(), file=sys.stderr)
    return 1 if changed else 0


async def _sync(args: argparse.Namespace) -> int:
    result = await _run_sync(args, dry_run=args.dry_run)
    if args.output == "json":
        summary: dict[str, Any] = result.summary()
        summary["objects"] = [
            {"object": str(e.key), "action": e.action.value, "message": e.message}
            for e in result.changeset.entries
        ]
        print(json.dumps(summary, indent=2))
    else:
        for entry in result.changeset.entries:
            if entry.action != Action.UNCHANGED:
                suffix = f" ({entry.message})" if entry.message else ""
                print(f"{entry.action.value:<10} {entry.key}{suffix}")
        print(
            f"{result.environment}: {'Synced' if result.synced else 'OutOfSync'}, {result.health.value}, "
            f"{result.condition} ({result.reason}): {result.message}"
        )
    return 0 if result.ok else 1


def _add_render_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="environment directory (a kustomization)")
    parser.add_argument("--repo-root", help="directory renders may read (default: the Git work tree of PATH)")
    parser.add_argument("--allow-remote-bases", action="store_true", help="allow remote kustomize bases")
    parser.add_argument("--allow-helm", action="store_true", help="allow helm chart inflation")
    parser.add_argument("--allow-plugins", action="store_true", help="allow KRM/exec function plugins")
    parser.add_argument("--render-timeout", type=float, default=60.0, help="kustomize timeout, seconds")


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "--environment",
        help="environment name: ownership marks and inventory (default: PATH's directory name)",
    )


def _runner(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        logs.configure(args.log_level if hasattr(args, "log_level") else "warning")
        args.path = Path(args.path).resolve()
        if not args.path.is_dir():
            raise CommandError(f"{args.path} is not a directory")
        args.root = repository_root(args.path, args.repo_root)
        try:
            code: int = asyncio.run(handler(args))
        except KubeError as exc:
            raise CommandError(str(exc)) from None
        return code

    return run


def _run_daemon(args: argparse.Namespace) -> int:
    from reconciler import daemon, settings  # noqa: PLC0415 - keep one-shot commands light

    try:
        config = settings.load(Path(args.config))
    except ConfigError as exc:
        if args.insecure_no_webhook_secret and "no webhook secret is configured" in str(exc):
            raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
            raw.setdefault("webhooks", {})["insecure_no_secret"] = True
            config = settings.parse(raw, Path(args.config).resolve().parent)
        else:
            raise CommandError(f"invalid configuration: {exc}") from None
    logs.configure(config.log_level)
    if config.webhooks.insecure_no_secret or args.insecure_no_webhook_secret:
        import structlog  # noqa: PLC0415

        structlog.get_logger("reconciler").warning(
            "INSECURE: webhooks are accepted without a signature; anyone who can reach "
            f"{config.listen} can trigger syncs. Use this for local development only."
        )
    kustomize = config.kustomize or find_kustomize()
    asyncio.run(daemon.run(config, kustomize))
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url = args.server.rstrip("/") + "/api/v1/environments"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the operator's own daemon
            environments = json.loads(response.read())["environments"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise CommandError(f"cannot read {url}: {exc}") from None
    if args.output == "json":
        print(json.dumps(environments, indent=2))
        return 0
    print(f"{'ENVIRONMENT':<28} {'REVISION':<13} {'SYNC':<10} {'HEALTH':<12} {'CONDITION':<12} MESSAGE")
    for env in environments:
        revision = (env.get("revision") or "")[:12] or "-"
        message = env.get("message") or env.get("reason") or ""
        if env.get("gitStale"):
            message = f"[git stale] {message}"
        print(
            f"{env['name']:<28} {revision:<13} {env.get('sync', '?'):<10} {env.get('health', '?'):<12} "
            f"{env.get('condition', '?'):<12} {message}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add run, status, render, diff and sync to the top-level parser."""
    status = subparsers.add_parser(
        "status", help="every environment's revision, sync and health, from a daemon"
    )
    status.add_argument("--server", default="http://127.0.0.1:8080", help="daemon URL (default: %(default)s)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.set_defaults(handler=_status)
    promotion_cli.register(subparsers)
    run = subparsers.add_parser(
        "run", help="run the daemon (Git source, webhooks, work queue, leader election)"
    )
    run.add_argument("--config", required=True, help="configuration file (YAML); see deploy/ and README")
    run.add_argument(
        "--insecure-no-webhook-secret",
        action="store_true",
        help="accept unsigned webhooks when no secret is configured (local development only)",
    )
    run.set_defaults(handler=_run_daemon)

    render = subparsers.add_parser(
        "render", help="print an environment's objects in apply order (no cluster)"
    )
    _add_render_flags(render)
    render.add_argument("--redact-secrets", action="store_true", help="replace Secret values by fingerprints")
    render.set_defaults(handler=_runner(_render))

    diff = subparsers.add_parser(
        "diff",
        help="server-side dry-run diff against the cluster (exit 0: no changes, 1: changes, 2: error)",
    )
    _add_render_flags(diff)
    _add_cluster_flags(diff)
    diff.add_argument("--log-level", default="warning")
    diff.set_defaults(handler=_runner(_diff))

    sync = subparsers.add_parser(
        "sync", help="one-shot sync of an environment; exit 0 only when applied and healthy"
    )
    _add_render_flags(sync)
    _add_cluster_flags(sync)
    sync.add_argument("--no-prune", action="store_true", help="apply only; delete nothing")
    sync.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    sync.add_argument("--timeout", type=float, default=300.0, help="health wait per stage, seconds")
    sync.add_argument("--revision", default="", help="revision recorded in the inventory and status")
    sync.add_argument(
        "--allow-mass-prune",
        action="store_true",
        help="override the prune circuit breaker (empty render or more than 50%% of the inventory)",
    )
    sync.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sync.add_argument("--log-level", default="warning")
    sync.set_defaults(handler=_runner(_sync))
