"""Benchmark: push -> first apply and push -> Healthy through the real daemon, with 100 environments.

    .venv/bin/python -m benchmarks.push_latency [--environments 100] [--pushes 20] [--keep]

A local cluster ("bench-push"), a `git daemon` serving a repository of N environments (each a
ConfigMap and a Deployment), a post-receive hook that sends a signed webhook, and the daemon as a
subprocess. Each push changes one environment (its ConfigMap and its image). "First apply" is when a
watch on the API server sees the changed ConfigMap; "Healthy" is when the daemon's status API reports
the environment Ready and Healthy at the pushed revision. Prints p50/p95; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from reconciler.devcluster import Cluster, ensure_toolchain, gitserver
from reconciler.devcluster.cluster import free_port
from reconciler.kube import KubeClient

NAMESPACE = "bench-push"


def git(*args: str, cwd: Path) -> str:
    return gitserver.git(*args, cwd=cwd, author="bench", timeout=120)


def write_env(work: Path, index: int, version: int) -> None:
    directory = work / f"env-{index:03d}"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"app-{index:03d}"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {"version": str(version)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": f"registry.invalid/app:{version}"}]},
                },
            },
        },
    ]
    (directory / "app.yaml").write_text(yaml.safe_dump_all(objects))
    (directory / "kustomization.yaml").write_text("resources: [app.yaml]\n")


def status(port: int) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/environments", timeout=5) as response:
        return {e["name"]: e for e in json.loads(response.read())["environments"]}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    tools = ensure_toolchain(lambda m: print(m, file=sys.stderr))
    cluster = Cluster("bench-push")
    kubeconfig = cluster.up(lambda m: print(m, file=sys.stderr), toolchain=tools)
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        root = Path(tmp)
        git("init", "-q", "--bare", "-b", "main", str(root / "envs.git"), cwd=root)
        work = root / "work"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        (work / "ns").mkdir()
        (work / "ns" / "ns.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        )
        (work / "ns" / "kustomization.yaml").write_text("resources: [ns.yaml]\n")
        for index in range(args.environments):
            write_env(work, index, 0)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "initial", cwd=work)
        git_port, daemon_port = free_port(), free_port()
        server = gitserver.serve(root, git_port)
        url = f"git://127.0.0.1:{git_port}/envs.git"
        git("remote", "add", "origin", url, cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        secret = root / "secret"
        secret.write_text(secrets.token_hex(20))
        gitserver.install_webhook_hook(
            root / "envs.git", f"http://127.0.0.1:{daemon_port}/webhooks/git", secret
        )
        envs = [{"name": "ns", "path": "ns"}] + [
            {"name": f"env-{i:03d}", "path": f"env-{i:03d}"} for i in range(args.environments)
        ]
        config = {
            "repository": {"url": url, "poll_interval": "1h"},
            "clusters": [{"name": "bench", "kubeconfig": str(kubeconfig)}],
            "environments": envs,
            "webhooks": {"github": {"secret_file": str(secret)}},
            "leader_election": {"enabled": False},
            "listen": f"127.0.0.1:{daemon_port}",
            "cache_dir": str(root / "cache"),
            "log_level": args.log_level,
            "kustomize": str(tools.kustomize),
            "workers": 8,
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "run", "--config", str(root / "config.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=(root / "daemon.log").open("wb"),
        )
        applied: dict[str, float] = {}
        try:
            started = time.monotonic()
            while True:
                try:
                    states = status(daemon_port)
                except OSError:
                    states = {}
                if states and all(s.get("condition") == "Ready" for s in states.values()):
                    break
                if time.monotonic() - started > 600:
                    raise RuntimeError("the environments did not become Ready in 600 s")
                await asyncio.sleep(0.2)
            print(f"{len(envs)} environments Ready after {time.monotonic() - started:.1f} s (cold start)")

            async with await KubeClient.from_kubeconfig(kubeconfig) as kube:
                info = await kube.resource("v1", "ConfigMap")

                async def watch() -> None:
                    _, version = await kube.list(info, namespace=NAMESPACE)
                    while True:
                        async for _, obj in kube.watch(info, version, namespace=NAMESPACE):
                            version = obj["metadata"].get("resourceVersion", version)
                            key = f"{obj['metadata']['name']}@{(obj.get('data') or {}).get('version')}"
                            applied.setdefault(key, time.monotonic())

                watcher = asyncio.create_task(watch())
                first_apply: list[float] = []
                push_command: list[float] = []
                healthy: list[float] = []
                for push in range(args.pushes):
                    index = push * 7 % args.environments
                    version = push + 1
                    write_env(work, index, version)
                    git("commit", "-q", "-am", f"env-{index:03d} v{version}", cwd=work)
                    pushed = time.monotonic()
                    git("push", "-q", "origin", "main", cwd=work)
                    push_command.append(time.monotonic() - pushed)
                    sha = git("rev-parse", "HEAD", cwd=work)
                    key = f"app-{index:03d}@{version}"
                    while key not in applied and time.monotonic() - pushed < 60:
                        if watcher.done():  # a dead watch would otherwise look like a slow daemon
                            watcher.result()
                            raise RuntimeError("the ConfigMap watch ended")
                        await asyncio.sleep(0.005)
                    first_apply.append(applied.get(key, float("nan")) - pushed)
                    while time.monotonic() - pushed < 120:
                        state = status(daemon_port)[f"env-{index:03d}"]
                        if (
                            state["revision"] == sha
                            and state["condition"] == "Ready"
                            and state["health"] == "Healthy"
                        ):
                            break
                        await asyncio.sleep(0.01)
                    healthy.append(time.monotonic() - pushed)
                watcher.cancel()
            print(f"pushes: {args.pushes}, environments configured: {len(envs)}")
            print(
                f"push -> first apply : p50 {statistics.median(first_apply) * 1000:7.0f} ms   "
                f"p95 {percentile(first_apply, 0.95) * 1000:7.0f} ms   (goal p50 < 300 ms)"
            )
            print(
                f"push -> Healthy     : p50 {statistics.median(healthy) * 1000:7.0f} ms   "
                f"p95 {percentile(healthy, 0.95) * 1000:7.0f} ms   (goal p50 < 3000 ms)"
            )
            print(
                f"`git push` itself   : p50 {statistics.median(push_command) * 1000:7.0f} ms   (includes the "
                "post-receive hook that sends the webhook; part of both figures above)"
            )
        finally:
            daemon.terminate()
            daemon.wait(20)
            if args.log_copy:
                args.log_copy.write_bytes((root / "daemon.log").read_bytes())
            server.terminate()
            server.wait(10)
            if not args.keep:
                cluster.down(lambda m: print(m, file=sys.stderr))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--environments", type=int, default=100)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--log-copy", type=Path, help="copy the daemon log here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
