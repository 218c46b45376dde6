"""End-to-end harness: a real Git server (git daemon, git:// on loopback), bare repositories with a
post-receive hook that sends signed webhooks, and the daemon as a subprocess against the local cluster
(and, for the multi-cluster tests, a second local cluster: ``cluster_a``)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster import gitserver
from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import Cluster, free_port

SECRET = "e2e-webhook-secret-0123456789abcdef"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Dev One",
    "GIT_AUTHOR_EMAIL": "dev1@example.com",
    "GIT_COMMITTER_NAME": "Dev One",
    "GIT_COMMITTER_EMAIL": "dev1@example.com",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


@dataclass
class GitServer:
    """`git daemon` serving every bare repository under ``base`` over git:// on loopback."""

    base: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = gitserver.serve(self.base, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git-server"), free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class Repo:
    """A bare repository on the server and a work clone to commit and push from."""

    server: GitServer
    name: str
    work: Path

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def write(self, relative: str, content: Any) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump_all(content, sort_keys=False)
        path.write_text(text)

    def commit_and_push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def install_hook(self, daemon_port: int, secret_file: Path) -> None:
        gitserver.install_webhook_hook(
            self.server.base / f"{self.name}.git", f"http://127.0.0.1:{daemon_port}/webhooks/git", secret_file
        )


@pytest.fixture
def repo(git_server: GitServer, tmp_path: Path, namespace: str) -> Repo:
    bare = git_server.base / f"{namespace}.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", git_server.url(namespace), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    return Repo(git_server, namespace, work)


@dataclass
class DaemonProcess:
    """The daemon as a subprocess, with helpers to read its HTTP API."""

    config_path: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, toolchain: Toolchain, wait_ready: bool = True) -> None:
        env = {**os.environ, "RECONCILER_KUSTOMIZE": str(toolchain.kustomize), **self.extra_env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            status = self.get_status("/healthz")
            if status == 200 and (not wait_ready or self.get_status("/readyz") == 200):
                return
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in 60 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def dump_tasks(self) -> None:
        """Ask the daemon to write its asyncio tasks' stacks to its log (SIGUSR2); for failure reports."""
        if self.process is None or self.process.poll() is not None:
            return
        before = self.log_path.stat().st_size
        os.kill(self.process.pid, signal.SIGUSR2)
        deadline, sizes = time.monotonic() + 5, [before]
        while time.monotonic() < deadline and (sizes[-1] == before or len(set(sizes[-3:])) > 1):
            time.sleep(0.05)  # until the log has grown and stopped growing
            sizes.append(self.log_path.stat().st_size)

    def get_status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def get_json(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def environment(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json(f"/api/v1/environments/{name}")
        return data

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def daemon_config(
    tmp_path: Path,
    *,
    repo_url: str,
    kubeconfig: Path,
    environments: list[dict[str, Any]],
    poll_interval: str = "1h",
    leader_election: dict[str, Any] | None = None,
    name: str = "daemon",
    **extra: Any,
) -> DaemonProcess:
    # these tests are about the daemon, not tenancy (tests/integration/test_tenancy.py, the demo): an
    # environment without a policy of its own is trusted like a platform team's, with every namespace
    # and cluster-scoped kind (never the daemon's own namespace)
    environments = [{"namespaces": ["*"], "cluster_scoped": ["*"], **env} for env in environments]
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    port = free_port()
    config = {
        "repository": {"url": repo_url, "branch": "main", "poll_interval": poll_interval},
        "clusters": [{"name": "local", "kubeconfig": str(kubeconfig)}],
        "environments": environments,
        "webhooks": {
            "github": {"secret_file": str(secret_file)},
            "generic": {"secret_file": str(secret_file)},
            **extra.pop("webhooks", {}),
        },
        "leader_election": leader_election or {"enabled": False},
        "listen": f"127.0.0.1:{port}",
        "cache_dir": str(tmp_path / f"{name}-cache"),
        "log_level": "info",
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return DaemonProcess(path, port, tmp_path / f"{name}.log")


class Admin:
    """Synchronous requests to the session cluster as its admin (for plain test code)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        pki = kubeconfig.parent / "pki"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and decoded body of one request ({} for an error); ``body`` is sent as JSON."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}


@pytest.fixture
def admin(kubeconfig: Path) -> Admin:
    """The session cluster, as its admin, synchronously."""
    return Admin(kubeconfig)


@pytest.fixture
def kube_sync(admin: Admin) -> Any:
    """A synchronous GET of one object as the admin ({} when it does not exist)."""

    def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        plural = {"ConfigMap": "configmaps", "Deployment": "deployments", "Secret": "secrets"}.get(
            kind, kind.lower() + "s"
        )
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, body = admin.call("GET", f"{prefix}/namespaces/{namespace}/{plural}/{name}")
        if status == 404:
            return {}
        assert status == 200, f"GET {kind}/{namespace}/{name}: {status}"
        data: dict[str, Any] = body
        return data

    return get


@pytest.fixture
def kube_list(admin: Admin) -> Any:
    """A synchronous GET of any collection as the admin: its items."""

    def get(path: str) -> list[dict[str, Any]]:
        status, body = admin.call("GET", path)
        assert status == 200, f"GET {path}: {status}"
        return list(body.get("items", []))

    return get


# -- a second cluster (issue 13): "a", beside the session cluster "b" -----------------------------


def _log(message: str) -> None:
    print(f"[dev-cluster a] {message}", flush=True)


@pytest.fixture(scope="session")
def cluster_a(toolchain: Toolchain) -> Iterator[Cluster]:
    """A second local cluster for the session ("a"; the shared session cluster is "b"), started on first
    use by the tests that ask for it and removed at the end. Its API server is stopped and started by
    tests: take it through ``namespace_a``, which starts it again afterwards."""
    local = Cluster(f"pytest-a-{os.getpid()}")
    local.up(_log, nodes=1, toolchain=toolchain)
    try:
        yield local
    finally:
        local.down(_log)


@pytest.fixture
def admin_a(cluster_a: Cluster) -> Admin:
    """Cluster a, as its admin, synchronously."""
    return Admin(cluster_a.kubeconfig_path)


@pytest.fixture
def namespace_a(namespace: str, cluster_a: Cluster, admin_a: Admin) -> Iterator[str]:
    """The test's namespace on cluster a too (the same name as ``namespace`` on b), deleted afterwards.

    Cluster a's API server is running when the test starts, and started again afterwards if the test
    stopped it, so the next test finds cluster a whole."""
    cluster_a.start("kube-apiserver", _log)
    status, body = admin_a.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    assert status == 201, (status, body)
    try:
        yield namespace
    finally:
        cluster_a.start("kube-apiserver", _log)
        admin_a.call("DELETE", f"/api/v1/namespaces/{namespace}")


def two_clusters(kubeconfig_a: Path, kubeconfig_b: Path, **each: Any) -> dict[str, Any]:
    """``daemon_config`` keywords for a daemon on clusters "a" and "b", b its home (its Lease and
    promotions); ``each`` is added to both clusters' settings (``probe_interval="1s"``...).

    Environments name their cluster (``"cluster": "a"``); ``kubeconfig`` of ``daemon_config`` is then
    unused (pass b's)."""
    return {
        "clusters": [
            {"name": "a", "kubeconfig": str(kubeconfig_a), **each},
            {"name": "b", "kubeconfig": str(kubeconfig_b), **each},
        ],
        "leader_election": {"enabled": False, "cluster": "b"},
    }
