"""The ``reconciler`` command line: the command tree, ``version``, the ``dev-cluster`` commands, and the
one place that turns errors into ``error: ...`` and an exit status.

Commands are grouped in the help as the daemon (``run``, ``status``), the one-shot engine (``render``,
``diff``, ``sync``, in ``commands``), promotions (in ``promotion.cli``) and the local control plane
(``dev-cluster``). Typer provides ``--install-completion`` and ``--show-completion``. Printing goes
through ``console``; the work lives elsewhere.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from reconciler import __version__, commands
from reconciler.console import CommandError, Output, emit, print_error, print_table
from reconciler.promotion import cli as promotion_cli

DEV_CLUSTER = "Local control plane"
OTHER = "Other"
NAME = Annotated[str, typer.Option("--name", help="cluster name")]


class ReportingGroup(TyperGroup):
    """A command group that prints a CommandError as ``error: MESSAGE`` and exits with status 2."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        """Run the chosen command, reporting the errors a person can act on without a traceback."""
        try:
            return super().invoke(ctx)
        except CommandError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit


app = typer.Typer(
    name="reconciler",
    cls=ReportingGroup,
    help="Event-driven GitOps reconciler for kustomize environments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
dev_cluster = typer.Typer(
    cls=ReportingGroup,
    no_args_is_help=True,
    short_help="Run a local Kubernetes control plane for the demo and the tests.",
    help="Run a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) "
    "for the demo and the tests: built once, cached by version under ~/.cache/reconciler, on loopback, "
    "with fake nodes that kwok keeps Ready.",
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Event-driven GitOps reconciler for kustomize environments."""


@contextmanager
def _dev_cluster_errors() -> Iterator[None]:
    from reconciler.devcluster import DevClusterError  # noqa: PLC0415 - loaded only for dev-cluster

    try:
        yield
    except DevClusterError as exc:
        raise CommandError(str(exc)) from None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def version(output: Output = "table") -> None:
    """Print the version of reconciler and of the tools it pins."""
    from reconciler.devcluster import versions  # noqa: PLC0415

    data = {
        "reconciler": __version__,
        "python": platform.python_version(),
        "kustomize": versions.KUSTOMIZE_VERSION,
        "kubernetes": versions.KUBERNETES_VERSION,
    }

    def human() -> None:
        print(f"reconciler {__version__}")
        print(f"python     {data['python']}")
        print(f"kustomize  {data['kustomize']} (pinned for rendering)")
        print(f"kubernetes {data['kubernetes']} (the local control plane's)")

    emit(output, data, human)


@dev_cluster.command("up")
def dev_cluster_up(
    name: NAME = "default",
    nodes: Annotated[int, typer.Option("--nodes", help="number of fake nodes")] = 3,
) -> None:
    """Start (or reuse) a cluster; prints its kubeconfig path last."""
    from reconciler.devcluster import Cluster, ensure_toolchain  # noqa: PLC0415

    with _dev_cluster_errors():
        kubeconfig = Cluster(name).up(_progress, nodes=nodes)
        tools = ensure_toolchain(_progress)
    _progress(f"kubectl: {tools.kubectl}")
    _progress(f"try:     {tools.kubectl} --kubeconfig {kubeconfig} get nodes")
    print(kubeconfig)


@dev_cluster.command("build")
def dev_cluster_build(output: Output = "table") -> None:
    """Build the pinned binaries into the cache if missing, and list them."""
    from reconciler.devcluster import ensure_toolchain  # noqa: PLC0415

    with _dev_cluster_errors():
        tools = ensure_toolchain(_progress)
    paths = {name: str(path) for name, path in vars(tools).items()}
    emit(output, paths, lambda: print_table(("BINARY", "PATH"), list(paths.items())))


@dev_cluster.command("down")
def dev_cluster_down(name: NAME = "default") -> None:
    """Stop a cluster's processes (by pid) and remove its files."""
    from reconciler.devcluster import Cluster  # noqa: PLC0415

    with _dev_cluster_errors():
        if not Cluster(name).down(_progress):
            _progress(f"no cluster named {name!r}")


@dev_cluster.command("kubeconfig")
def dev_cluster_kubeconfig(name: NAME = "default") -> None:
    """Print the path of a cluster's kubeconfig."""
    from reconciler.devcluster import Cluster  # noqa: PLC0415

    cluster = Cluster(name)
    if cluster.load_state() is None:
        _progress(f"no cluster named {name!r}; start it with `reconciler dev-cluster up --name {name}`")
        raise typer.Exit(1)
    print(cluster.kubeconfig_path)


@dev_cluster.command("status")
def dev_cluster_status(output: Output = "table") -> None:
    """List the local clusters and whether their processes run."""
    from reconciler.devcluster import list_clusters  # noqa: PLC0415

    with _dev_cluster_errors():
        statuses = [cluster.status() for cluster in list_clusters()]
    data = [
        {
            "name": s.name,
            "state": s.state,
            "server": s.server,
            "kubeconfig": s.kubeconfig,
            "processes": [{"name": p.name, "pid": p.pid, "alive": p.alive} for p in s.processes],
        }
        for s in statuses
    ]

    def human() -> None:
        if not statuses:
            print("no local clusters; start one with `reconciler dev-cluster up`")
            return
        print_table(
            ("NAME", "STATE", "SERVER", "KUBECONFIG"),
            [(s.name, s.state, s.server, s.kubeconfig) for s in statuses],
        )
        for s in statuses:
            for p in s.processes:
                if not p.alive:
                    print(f"  {s.name}: {p.name} (pid {p.pid}) is not running")

    emit(output, data, human)


commands.register(app)
promotion_cli.register(app)
app.add_typer(dev_cluster, name="dev-cluster", rich_help_panel=DEV_CLUSTER)
app.command("version", rich_help_panel=OTHER)(version)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reconciler`` console script (and of ``python -m reconciler.cli``)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name="reconciler")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
