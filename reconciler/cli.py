"""The ``reconciler`` command line: argument parsing and printing only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from reconciler import __version__, commands
from reconciler.devcluster import Cluster, DevClusterError, list_clusters
from reconciler.devcluster.build import ensure_toolchain


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dev_cluster_up(args: argparse.Namespace) -> int:
    cluster = Cluster(args.name)
    kubeconfig = cluster.up(_progress, nodes=args.nodes)
    tools = ensure_toolchain(_progress)
    _progress(f"kubectl: {tools.kubectl}")
    _progress(f"try:     {tools.kubectl} --kubeconfig {kubeconfig} get nodes")
    print(kubeconfig)
    return 0


def _dev_cluster_build(args: argparse.Namespace) -> int:
    tools = ensure_toolchain(_progress)
    for name, path in vars(tools).items():
        print(f"{name:<24} {path}")
    return 0


def _dev_cluster_down(args: argparse.Namespace) -> int:
    if not Cluster(args.name).down(_progress):
        _progress(f"no cluster named {args.name!r}")
    return 0


def _dev_cluster_kubeconfig(args: argparse.Namespace) -> int:
    cluster = Cluster(args.name)
    if cluster.load_state() is None:
        _progress(
            f"no cluster named {args.name!r}; start it with `reconciler dev-cluster up --name {args.name}`"
        )
        return 1
    print(cluster.kubeconfig_path)
    return 0


def _dev_cluster_status(args: argparse.Namespace) -> int:
    statuses = [cluster.status() for cluster in list_clusters()]
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "state": s.state,
                        "server": s.server,
                        "kubeconfig": s.kubeconfig,
                        "processes": [{"name": p.name, "pid": p.pid, "alive": p.alive} for p in s.processes],
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
        return 0
    if not statuses:
        print("no local clusters; start one with `reconciler dev-cluster up`")
        return 0
    print(f"{'NAME':<20} {'STATE':<9} {'SERVER':<26} KUBECONFIG")
    for s in statuses:
        print(f"{s.name:<20} {s.state:<9} {s.server:<26} {s.kubeconfig}")
        for p in s.processes:
            if not p.alive:
                print(f"  {p.name} (pid {p.pid}) is not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to check that the docs match the CLI)."""
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Event-driven GitOps reconciler for kustomize environments.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = subparsers.add_parser(
        "dev-cluster",
        help="run a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, "
        "scheduler, kwok) for the demo and the tests",
        description="Build (once, cached by version under ~/.cache/reconciler) and run a local "
        "Kubernetes control plane on loopback, with fake nodes that kwok keeps Ready.",
    )
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start (or reuse) a cluster; prints its kubeconfig path last")
    up.add_argument("--name", default="default", help="cluster name (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=3, help="number of fake nodes (default: %(default)s)")
    up.set_defaults(handler=_dev_cluster_up)
    build = dev_commands.add_parser(
        "build", help="build the pinned binaries into the cache if missing, and list them"
    )
    build.set_defaults(handler=_dev_cluster_build)
    down = dev_commands.add_parser("down", help="stop a cluster's processes and remove its files")
    down.add_argument("--name", default="default", help="cluster name (default: %(default)s)")
    down.set_defaults(handler=_dev_cluster_down)
    kubeconfig = dev_commands.add_parser("kubeconfig", help="print the path of a cluster's kubeconfig")
    kubeconfig.add_argument("--name", default="default", help="cluster name (default: %(default)s)")
    kubeconfig.set_defaults(handler=_dev_cluster_kubeconfig)
    status = dev_commands.add_parser("status", help="list local clusters and whether they run")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.set_defaults(handler=_dev_cluster_status)
    commands.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reconciler`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except (DevClusterError, commands.CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
