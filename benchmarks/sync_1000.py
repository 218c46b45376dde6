"""Benchmark: cold sync of 1,000 objects by reconciler versus `kubectl apply --server-side`, then a
no-op re-sync by the same engine with warm watch caches. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.sync_1000 [--namespaces 100] [--kubeconfig K] [--keep]

Without --kubeconfig it starts (or reuses) a local cluster named "bench" and removes it afterwards
unless --keep is given. Both tools get the same rendered objects, in different namespaces, so both
syncs are cold. Request counts come from the API server's own apiserver_request_total.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from reconciler.devcluster import Cluster, ensure_toolchain
from reconciler.kube import KubeClient
from reconciler.kube.cache import LiveCache
from reconciler.objects import Manifest
from reconciler.sync import Engine, SyncOptions

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
RESOURCES = {
    "namespaces",
    "serviceaccounts",
    "configmaps",
    "secrets",
    "services",
    "deployments",
    "roles",
    "rolebindings",
    "networkpolicies",
    "poddisruptionbudgets",
}


def app(prefix: str, index: int) -> list[dict[str, Any]]:
    """A ten-object application in its own namespace."""
    ns = f"{prefix}-{index:03d}"
    labels = {"app": "shop"}
    meta = {"namespace": ns}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop", **meta}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shop", **meta},
            "data": {"LOG_LEVEL": "info"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop", **meta},
            "stringData": {"token": "fake"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", **meta},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shop", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "shop",
                        "containers": [{"name": "shop", "image": "registry.invalid/shop:1"}],
                    },
                },
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "shop", **meta},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "shop", **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": ns}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "shop", **meta},
            "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "shop", **meta},
            "spec": {"minAvailable": 0, "selector": {"matchLabels": labels}},
        },
    ]


async def request_counts(kube: KubeClient) -> Counter[str]:
    """apiserver_request_total for our resources (main resource only, watches excluded), by verb."""
    counts: Counter[str] = Counter()
    for line in (await kube.text("/metrics")).splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group("labels")))
        if (
            labels.get("resource") in RESOURCES
            and not labels.get("subresource")
            and labels.get("verb") != "WATCH"
        ):
            verb = labels["verb"] + ("(dry-run)" if labels.get("dry_run") else "")
            counts[verb] += int(float(match.group("value")))
    return counts


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {verb: count for verb, count in sorted((after - before).items()) if count}


async def run(args: argparse.Namespace) -> None:
    tools = ensure_toolchain(lambda m: print(m, file=sys.stderr))
    cluster = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        cluster = Cluster("bench")
        kubeconfig = str(cluster.up(lambda m: print(m, file=sys.stderr), toolchain=tools))
    try:
        kubectl_objects = [o for i in range(args.namespaces) for o in app("bench-kubectl", i)]
        ours = [Manifest(o) for i in range(args.namespaces) for o in app("bench-reconciler", i)]
        print(f"objects per tool: {len(ours)} ({args.namespaces} namespaces x 10-object app)")

        async with await KubeClient.from_kubeconfig(kubeconfig) as kube:
            with tempfile.TemporaryDirectory() as tmp:
                rendered = Path(tmp) / "rendered.yaml"
                rendered.write_text(yaml.safe_dump_all(kubectl_objects))
                before = await request_counts(kube)
                started = time.perf_counter()
                subprocess.run(
                    [
                        str(tools.kubectl),
                        "--kubeconfig",
                        kubeconfig,
                        "apply",
                        "--server-side",
                        "--field-manager",
                        "bench",
                        "-f",
                        str(rendered),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                kubectl_seconds = time.perf_counter() - started
                kubectl_requests = delta(await request_counts(kube), before)

            cache = LiveCache(kube)
            engine = Engine(kube, cache=cache)
            options = SyncOptions(environment="bench", wait=False, concurrency=args.concurrency)
            before = await request_counts(kube)
            cpu_started = time.process_time()
            started = time.perf_counter()
            cold = await engine.sync(ours, options)
            ours_seconds = time.perf_counter() - started
            ours_cpu = time.process_time() - cpu_started
            cold_requests = delta(await request_counts(kube), before)
            assert cold.condition != "Stalled", cold.message
            # let the cluster settle (controllers create service accounts, pods become ready) so the
            # no-op measurement below sees our requests, not the controllers' catch-up
            settled = await engine.sync(ours, SyncOptions(environment="bench", health_timeout=300))
            assert settled.ok, settled.message

            before = await request_counts(kube)
            client_before = Counter(kube.request_counts())
            started = time.perf_counter()
            noop = await engine.sync(ours, options)
            noop_seconds = time.perf_counter() - started
            noop_requests = delta(await request_counts(kube), before)
            client_noop = Counter(kube.request_counts()) - client_before
            assert noop.condition != "Stalled", noop.message
            await cache.close()

        writes = sum(v for k, v in noop_requests.items() if k in ("POST", "PUT", "PATCH", "APPLY", "DELETE"))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines = [
            "",
            f"kubectl apply --server-side : {kubectl_seconds:7.2f} s  {len(ours) / kubectl_seconds:7.0f} objects/s",
            f"reconciler cold sync        : {ours_seconds:7.2f} s  {len(ours) / ours_seconds:7.0f} objects/s"
            f"  (dry-run validation + ordered apply, no health wait; {ours_cpu:.2f} s CPU in reconciler)",
            f"ratio reconciler / kubectl  : {ours_seconds / kubectl_seconds:7.2f}   (goal <= 0.5)",
            f"  kubectl requests          : {kubectl_requests}",
            f"  reconciler cold requests  : {cold_requests}",
            f"  reconciler cold changes   : {cold.changeset.summary()}",
            f"reconciler no-op re-sync    : {noop_seconds * 1000:7.1f} ms  changes: {noop.changeset.summary()}",
            f"  API server requests       : {noop_requests or 'none'}   "
            f"(total {sum(noop_requests.values())}; writes {writes})",
            f"  as counted by the client  : {dict(client_noop)}  (includes the /metrics scrape)",
            f"reconciler peak RSS         : {rss:7.1f} MiB",
        ]
        print("\n".join(lines))
    finally:
        if cluster is not None and not args.keep:
            cluster.down(lambda m: print(m, file=sys.stderr))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--keep", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
