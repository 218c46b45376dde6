"""A cluster reached through a kubeconfig held in a Secret of the home cluster, against the local
control plane: connected once the Secret appears, reconnected when it changes, a refused kubeconfig
(credential plugin) keeps the connection in use and is reported by field, never with its content; the
probe tells when the cluster stops answering."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from reconciler.daemon_parts.clusters import Clusters
from reconciler.kube import KubeClient
from reconciler.metrics import Metrics
from reconciler.render import Renderer
from reconciler.settings import Settings, parse
from tests.helpers import eventually

pytestmark = pytest.mark.cluster
SECRET = "remote-kubeconfig"


def inline_kubeconfig(kubeconfig: Path, server: str | None = None) -> dict[str, Any]:
    """The session cluster's admin kubeconfig with every credential inline (as a Secret holds it)."""
    pki = kubeconfig.parent / "pki"
    original = yaml.safe_load(kubeconfig.read_text())

    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "remote",
                "cluster": {
                    "server": server or original["clusters"][0]["cluster"]["server"],
                    "certificate-authority-data": data("ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": data("admin.crt"), "client-key-data": data("admin.key")},
            }
        ],
        "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "admin"}}],
        "current-context": "remote",
    }


def settings_for(tmp_path: Path, kubeconfig: Path, namespace: str) -> Settings:
    (tmp_path / "secret").write_text("a-long-random-webhook-secret\n")
    raw = {
        "repository": {"url": "https://git.example.com/envs.git"},
        "clusters": [
            {"name": "home", "kubeconfig": str(kubeconfig)},
            {
                "name": "remote",
                "kubeconfig_secret": {"namespace": namespace, "name": SECRET},
                "probe_interval": "0.2s",
                "request_timeout": "5s",
            },
        ],
        "environments": [{"name": "production", "path": "production", "cluster": "remote"}],
        "webhooks": {"generic": {"secret_file": "secret"}},
        "cache_dir": str(tmp_path / "cache"),
        "install_crds": False,
    }
    return parse(raw, tmp_path, environ={})


@pytest.fixture
async def clusters(
    tmp_path: Path, kubeconfig: Path, namespace: str
) -> AsyncIterator[tuple[Clusters, list[str]]]:
    """The daemon's clusters with their Secret follower and probe running; the hooks' calls."""
    settings = settings_for(tmp_path, kubeconfig, namespace)
    connections = Clusters(settings, Renderer(), Metrics(), lambda _env, _entry: None)
    calls: list[str] = []
    connections.on_up = lambda name: calls.append(f"up {name}")
    connections.on_down = lambda name: calls.append(f"down {name}")
    connections.on_replaced = lambda name: calls.append(f"replaced {name}")
    await connections.connect()
    remote = settings.cluster("remote")
    tasks = [
        asyncio.create_task(connections.follow_secret(remote)),
        asyncio.create_task(connections.probe(remote)),
    ]
    try:
        yield connections, calls
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await connections.close()


async def put_secret(kube: KubeClient, namespace: str, config: dict[str, Any]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "data": {"kubeconfig": base64.b64encode(yaml.safe_dump(config).encode()).decode()},
    }
    await kube.apply(body)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_kubeconfig_secret_connects_reconnects_and_refuses_plugins_without_leaking(
    clusters: tuple[Clusters, list[str]], kube: KubeClient, kubeconfig: Path, namespace: str
) -> None:
    connections, calls = clusters

    async def secret_missing() -> bool:
        return "not found" in connections.secret_errors.get("remote", "") and "remote" in connections.errors

    await eventually(secret_missing, what="the missing Secret reported")
    assert any("remote" in line and "not found" in line for line in connections.degraded())

    await put_secret(kube, namespace, inline_kubeconfig(kubeconfig))

    async def connected() -> bool:
        return "remote" in connections.clients and "remote" not in connections.errors

    await eventually(connected, what="connected with the Secret's kubeconfig")
    assert calls == ["up remote"]
    assert connections.metrics.cluster_up.labels("remote")._value.get() == 1
    first = connections.clients["remote"]
    assert "production" not in connections.engines  # engines are by cluster (and tenant)
    assert "remote" in connections.engines

    # a credential plugin would run a command in the daemon's pod: refused, the connection kept
    plugin = inline_kubeconfig(kubeconfig)
    key = plugin["users"][0]["user"]["client-key-data"]
    plugin["users"][0]["user"] = {"exec": {"command": "/bin/sh", "args": ["-c", "id"], "apiVersion": "v1"}}
    plugin["users"][0]["user"]["token"] = key  # a credential that must never be printed
    with capture_logs() as logs:
        await put_secret(kube, namespace, plugin)

        async def refused() -> bool:
            return "users[admin].exec" in connections.secret_errors.get("remote", "")

        await eventually(refused, what="the plugin kubeconfig refused")
    assert connections.clients["remote"] is first
    assert "remote" not in connections.errors  # still answering through the connection in use
    assert key not in repr(logs)
    assert key not in repr(connections.degraded())

    # a changed kubeconfig replaces the connection; this one points at nothing: the probe says so
    await put_secret(kube, namespace, inline_kubeconfig(kubeconfig, f"https://127.0.0.1:{closed_port()}"))

    async def replaced_and_down() -> bool:
        return connections.clients.get("remote") not in (None, first) and "remote" in connections.errors

    await eventually(replaced_and_down, what="the new connection probed as down")
    assert calls[:2] == ["up remote", "replaced remote"]
    assert calls[-1] == "down remote"
    assert "unreachable" in connections.unreachable("remote")
    assert connections.metrics.cluster_up.labels("remote")._value.get() == 0
