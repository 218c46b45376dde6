"""The demo (the README's main job): two local clusters (``staging`` and ``production``, the daemon's
home), a Git server with this repository's ``environments/``, a post-receive hook that sends signed
webhooks, and the daemon syncing every staging overlay to the staging cluster and every other one to
the production cluster (the add-on CRDs to both); promotions cross from one cluster to the other.

    python -m reconciler.devcluster.demo [--once] [--environments DIR]

Everything lives in ``<cache>/demo/``: the bare repository served by ``git daemon`` over ``git://`` on
loopback, a work clone to edit and push from, the webhook secret, the daemon's configuration and logs.
The demo prints each environment's status as it changes. Without ``--once`` it keeps running until
Ctrl-C (push changes from another terminal and watch them land); with ``--once`` it exits 0 as soon as
every environment is Ready and Healthy (1 if that takes longer than the timeout). Either way it stops
the daemon and the Git server; the clusters stay up for inspection.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.devcluster import gitserver, tenants
from reconciler.devcluster.build import cache_root, ensure_toolchain
from reconciler.devcluster.cluster import Cluster, free_port
from reconciler.devcluster.provisioner import VolumeProvisioner


def say(message: str) -> None:
    print(message, flush=True)


def git(*args: str, cwd: Path) -> str:
    return gitserver.git(*args, cwd=cwd, author="reconciler demo")


ADDONS = "cluster-addons-crds"  # the add-on CRDs (Istio, ServiceMonitor) other systems' objects need
# systems run as tenants: each environment synced as its own ServiceAccount, in namespaces an
# administrator created (reconciler.devcluster.tenants), allowed nothing else
TENANTS = ("access", "aiplus")
# cluster-scoped kinds the other systems' overlays declare (their policy lists exactly these)
CLUSTER_SCOPED = {"cluster-addons": ["CustomResourceDefinition"], "detection": ["StorageClass"]}
DEMO_ADMIN = {"kind": "User", "name": "reconciler-dev-admin", "apiGroup": "rbac.authorization.k8s.io"}


STAGING, PRODUCTION = "staging", "production"  # the demo's clusters (the daemon's home: production)


def cluster_of(overlay: str) -> str:
    """Staging overlays go to the staging cluster, everything else to production."""
    return STAGING if overlay == "staging" else PRODUCTION


def discover(environments: Path) -> list[dict[str, Any]]:
    """Every ``<system>/<overlay>`` directory with a kustomization, as daemon environments on their
    cluster (``cluster_of``) with their access policy (``TENANTS`` as their own ServiceAccounts); when
    the add-on CRDs are among them, they are synced to both clusters and every other environment
    depends on those of its own cluster."""
    found: list[dict[str, Any]] = []
    for system in sorted(p for p in environments.iterdir() if p.is_dir()):
        for overlay in sorted(p for p in system.iterdir() if p.is_dir() and p.name != "base"):
            if (overlay / "kustomization.yaml").is_file():
                name = f"{system.name}-{overlay.name}"
                env: dict[str, Any] = {
                    "name": name,
                    "path": f"environments/{system.name}/{overlay.name}",
                    "cluster": cluster_of(overlay.name),
                    "health_timeout": 120,
                }
                if system.name in TENANTS:  # the overlay's namespace is named like the environment
                    env["namespaces"] = [name]
                    env["service_account"] = tenants.service_account(name)
                if system.name in CLUSTER_SCOPED:
                    env["cluster_scoped"] = CLUSTER_SCOPED[system.name]
                found.append(env)
    addons = next((env for env in found if env["name"] == ADDONS), None)
    if addons is not None:
        addons["cluster"] = PRODUCTION
        found.append({**addons, "name": f"{ADDONS}-{STAGING}", "cluster": STAGING})
        for env in found:
            if not env["name"].startswith(ADDONS):
                env["depends_on"] = [ADDONS if env["cluster"] == PRODUCTION else f"{ADDONS}-{STAGING}"]
    return found


def demo_promotions(root: Path, environments: list[dict[str, Any]]) -> dict[str, Any]:
    """A staging → production pipeline for every system that has both, with three demo approvers, each
    with an SSH key of their own generated into ``<root>/keys/`` (the daemon gets only the public keys)."""
    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    approvers = []
    for person in ("alice", "bob", "carol"):
        key = keys / person
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{person}@example.com", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        public = (keys / f"{person}.pub").read_text().strip()
        approvers.append({"identity": f"{person}@example.com", "keys": [public], "groups": ["sre"]})
    names = {e["name"] for e in environments}
    pipelines = [
        {
            "name": env["name"].removesuffix("-staging"),
            "from": env["name"],
            "to": env["name"].removesuffix("-staging") + "-production",
            "approvals": 2,
            "approvers": ["group:sre"],
            "soak": "30s",
            "rollback": {"approvals": 1},
        }
        for env in environments
        if env["name"].endswith("-staging") and env["name"].removesuffix("-staging") + "-production" in names
    ]
    return {"approvers": approvers, "pipelines": pipelines}


def status_line(env: dict[str, Any]) -> str:
    revision = (env.get("revision") or "")[:12] or "-"
    return (
        f"  {env['name']:<28} {env.get('cluster', '-'):<11} {revision:<13} {env.get('sync', '?'):<10} "
        f"{env.get('health', '?'):<12} "
        f"{env.get('condition', '?')}: {env.get('message') or env.get('reason') or ''}"
    )[:160]


def fetch_status(port: int) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/environments", timeout=5) as response:
            data: list[dict[str, Any]] = json.loads(response.read())["environments"]
            return data
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return []


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--once", action="store_true", help="exit once every environment is Ready and Healthy"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="with --once: seconds to wait")
    parser.add_argument(
        "--environments", type=Path, default=Path(__file__).resolve().parents[2] / "environments"
    )
    parser.add_argument(
        "--name", default="demo", help="name of the production cluster (staging: NAME-staging)"
    )
    return parser.parse_args()


def _create_repository(root: Path, environments: Path) -> tuple[Path, Path]:
    """The bare repository and a work clone holding ``environments/``, one commit on ``main``."""
    bare, work = root / "environments.git", root / "work"
    say("creating the local Git repository from environments/ ...")
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=root)
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    shutil.copytree(environments, work / "environments")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "environments from the reconciler repository", cwd=work)
    return bare, work


@dataclass(frozen=True)
class _Served:
    """The Git server and where the daemon will listen."""

    process: subprocess.Popen[bytes]
    url: str
    secret_file: Path
    daemon_port: int


def _serve_repository(root: Path, bare: Path, work: Path) -> _Served:
    """Serve the bare repository over git://, install the signed-webhook hook, push the work clone."""
    git_port, daemon_port = free_port(), free_port()
    url = f"git://127.0.0.1:{git_port}/environments.git"
    git_server = gitserver.serve(root, git_port)
    secret_file = root / "webhook-secret"
    secret_file.write_text(secrets.token_hex(24))
    secret_file.chmod(0o600)
    gitserver.install_webhook_hook(bare, f"http://127.0.0.1:{daemon_port}/webhooks/git", secret_file)
    git("remote", "add", "origin", url, cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    git("branch", "-q", "--set-upstream-to=origin/main", cwd=work)
    return _Served(git_server, url, secret_file, daemon_port)


def _apply_tenants(
    root: Path, kubectl: Path, kubeconfig: Path, cluster: str, environments: list[dict[str, Any]]
) -> None:
    """The namespaces and service accounts of the tenants on ``cluster``, applied with kubectl."""
    tenant_namespaces = [
        ns for env in environments if env["cluster"] == cluster for ns in env.get("namespaces", [])
    ]
    listed = ", ".join(tenant_namespaces)
    say(f"creating the tenants' namespaces and service accounts on {cluster} ({listed}) ...")
    platform = root / f"tenants-{cluster}.yaml"
    platform.write_text(
        yaml.safe_dump_all(tenants.platform_objects(tenant_namespaces, DEMO_ADMIN), sort_keys=False)
    )
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", str(platform)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _start_daemon(root: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path]:
    """Write the daemon's configuration and start it; the process and its log file."""
    config_path = root / "reconciler.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = root / "daemon.log"
    with log_path.open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    say(f"daemon started (pid {daemon.pid}); log: {log_path}")
    return daemon, log_path


def _say_what_to_try(
    root: Path, work: Path, daemon_port: int, kubeconfigs: dict[str, Path], kubectl: Path
) -> None:
    say("")
    say("While it runs, from another terminal:")
    say(f"  cd {work}")
    say("  $EDITOR environments/tams/staging/kustomization.yaml   # e.g. change newTag")
    say("  git commit -am 'bump staging' && git push             # the hook sends a signed webhook")
    say(f"  curl -s http://127.0.0.1:{daemon_port}/api/v1/environments")
    for cluster, kubeconfig in kubeconfigs.items():
        say(f"  KUBECONFIG={kubeconfig} {kubectl} get deploy -A    # the {cluster} cluster")
    say("")
    say("Promote staging to production (alice requests; bob and carol approve, each with their own SSH key):")
    cli = f"{Path(sys.executable).parent / 'reconciler'}"
    server = f"--server http://127.0.0.1:{daemon_port}"
    keys = root / "keys"
    say(f"  {cli} promote tams-staging tams-production --as alice@example.com --key {keys}/alice {server}")
    say(f"  {cli} approve --pipeline tams --as bob@example.com --key {keys}/bob {server}")
    say(f"  {cli} approve --pipeline tams --as carol@example.com --key {keys}/carol {server}")
    say(f"  {cli} promotions --as bob@example.com --key {keys}/bob {server}   # reads are signed too")
    say(f"  {cli} rollback tams-production --as alice@example.com --key {keys}/alice {server}")
    say("")


def _watch(
    daemon: subprocess.Popen[bytes], daemon_port: int, args: argparse.Namespace, log_path: Path
) -> int:
    """Print each environment's status as it changes until Ctrl-C (or, with --once, until every one is
    Ready and Healthy: 0, or the timeout: 1); 1 when the daemon exits."""
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    shown: dict[str, str] = {}
    started = time.monotonic()
    while not stop["now"]:
        if daemon.poll() is not None:
            say(f"the daemon exited with {daemon.returncode}; see {log_path}")
            return 1
        statuses = fetch_status(daemon_port)
        for env in statuses:
            line = status_line(env)
            if shown.get(env["name"]) != line:
                shown[env["name"]] = line
                say(time.strftime("%H:%M:%S") + line)
        done = statuses and all(
            e.get("condition") == "Ready" and e.get("health") == "Healthy" for e in statuses
        )
        if args.once and done:
            say(f"all {len(statuses)} environments are Ready and Healthy")
            return 0
        if args.once and time.monotonic() - started > args.timeout:
            say(f"not every environment became Ready and Healthy in {args.timeout:.0f} s; see {log_path}")
            return 1
        time.sleep(0.5)
    return 0


def main() -> int:
    args = _arguments()
    tools = ensure_toolchain(say)
    clusters = {PRODUCTION: Cluster(args.name), STAGING: Cluster(f"{args.name}-{STAGING}")}
    kubeconfigs = {name: cluster.up(say, toolchain=tools) for name, cluster in clusters.items()}
    # the local clusters have no volume provisioner of their own
    provisioners = [VolumeProvisioner(cluster) for cluster in clusters.values()]
    for provisioner in provisioners:
        provisioner.start()
    root = cache_root() / ("demo" if args.name == "demo" else f"demo-{args.name}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    bare, work = _create_repository(root, args.environments)
    served = _serve_repository(root, bare, work)
    environments = discover(args.environments)
    for name, kubeconfig in kubeconfigs.items():
        _apply_tenants(root, tools.kubectl, kubeconfig, name, environments)
    config = {
        "repository": {"url": served.url, "branch": "main", "poll_interval": "60s"},
        # production first: the daemon's home (its Lease and promotions)
        "clusters": [{"name": name, "kubeconfig": str(path)} for name, path in kubeconfigs.items()],
        "environments": environments,
        "webhooks": {"github": {"secret_file": str(served.secret_file)}},
        "leader_election": {"enabled": True, "identity": "demo"},  # a restarted demo leads again at once
        "listen": f"127.0.0.1:{served.daemon_port}",
        "cache_dir": str(root / "daemon-cache"),
        "kustomize": str(tools.kustomize),
        "promotions": demo_promotions(root, environments),
    }
    daemon, log_path = _start_daemon(root, config)
    _say_what_to_try(root, work, served.daemon_port, kubeconfigs, tools.kubectl)
    try:
        return _watch(daemon, served.daemon_port, args, log_path)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
        for provisioner in provisioners:
            provisioner.stop()
        served.process.terminate()
        served.process.wait(10)
        say("daemon and Git server stopped; the clusters stay up for inspection:")
        for cluster in clusters.values():
            say(f"  reconciler dev-cluster down --name {cluster.name}")


if __name__ == "__main__":
    sys.exit(main())
