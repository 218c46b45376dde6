"""Observability end to end: a real Prometheus scrapes the daemon while commits are pushed; the
Environment objects, Events and logs tell the same story; a Secret's value never leaks into any of them."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import free_port
from tests.e2e.conftest import DaemonProcess, Repo, daemon_config
from tests.helpers import wait_for
from tests.support import config_map

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
METRIC_NAME = re.compile(r"\breconciler_[a-z0-9_]+")


@dataclass
class Prometheus:
    """A real Prometheus server scraping one target every second, queried through its HTTP API."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails on a PromQL error."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode()}") from None
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def values(self, expr: str, label: str) -> dict[str, float]:
        """``label`` value -> sample value of an instant vector query."""
        return {row["metric"].get(label, ""): float(row["value"][1]) for row in self.query(expr)}


def start_prometheus(toolchain: Toolchain, tmp_path: Path, target_port: int) -> Prometheus:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "reconciler",
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(toolchain.prometheus),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url + "/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(ready, timeout=30, interval=0.1, what="Prometheus to be ready")
    return server


@pytest.fixture
def prometheus_for(toolchain: Toolchain, tmp_path: Path) -> Iterator[Any]:
    """Starts a Prometheus that scrapes a daemon; stopped at the end of the test."""
    started: list[Prometheus] = []

    def start(daemon: DaemonProcess) -> Prometheus:
        server = start_prometheus(toolchain, tmp_path, daemon.port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        server.process.wait(timeout=15)


def write_environment(repo: Repo, namespace: str, *, note: str, password: str, extra: bool) -> None:
    """One staging overlay: a ConfigMap, a Secret holding ``password``, and optionally a second ConfigMap."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "credentials", "namespace": namespace},
        "type": "Opaque",
        "stringData": {"password": password},
    }
    objects = [config_map("settings", namespace, note=note), secret]
    if extra:
        objects.append(config_map("extra", namespace, key="extra"))
    repo.write("apps/base/app.yaml", objects)
    repo.write("apps/base/kustomization.yaml", "resources: [app.yaml]\n")
    repo.write("apps/staging/kustomization.yaml", "resources: [../base]\nnamePrefix: staging-\n")


def break_environment(repo: Repo) -> None:
    """A commit whose render fails: the kustomization lists a file that does not exist."""
    repo.write("apps/base/kustomization.yaml", "resources: [app.yaml, missing.yaml]\n")


def start_daemon(
    tmp_path: Path, repo: Repo, kubeconfig: Path, toolchain: Toolchain, name: str
) -> DaemonProcess:
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[{"name": name, "path": "apps/staging", "health_timeout": 60}],
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    daemon.start(toolchain)
    return daemon


def env_name(namespace: str) -> str:
    return f"{namespace}"[:50].rstrip("-") + "-s"


def kubectl_json(toolchain: Toolchain, kubeconfig: Path, *args: str) -> Any:
    result = subprocess.run(
        [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def exported_names(metrics_text: str) -> set[str]:
    """Every metric name a /metrics page declares or samples (histogram and counter suffixes included)."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "counter":
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries() -> tuple[list[str], list[str]]:
    """The dashboard's PromQL expressions, and its variables' Grafana queries (label_values(...))."""
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    variables = [
        v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    return exprs, variables


def test_prometheus_scrapes_sync_status_and_revision_as_commits_land(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    prometheus_for: Any,
) -> None:
    """Through Prometheus's query API: Synced at revision A; a broken push makes the environment
    OutOfSync and Stalled while revision A stays the applied one; the fix makes it Synced at revision C
    and A's info series disappears. The dashboard and the alert rules use only exported names."""
    write_environment(repo, namespace, note="1", password=secrets.token_hex(16), extra=True)
    first = repo.commit_and_push("initial")
    env = env_name(namespace)
    daemon = start_daemon(tmp_path, repo, kubeconfig, toolchain, env)
    try:
        prometheus = prometheus_for(daemon)
        selector = f'environment="{env}"'
        revision_expr = f"reconciler_environment_revision_info{{{selector}}}"
        status_expr = f"reconciler_environment_sync_status{{{selector}}} == 1"
        condition_expr = f"reconciler_environment_condition{{{selector}}} == 1"

        wait_for(
            lambda: prometheus.values(revision_expr, "revision") == {first: 1.0},
            timeout=60,
            interval=0.2,
            what="Prometheus to scrape revision A",
        )
        assert prometheus.values(status_expr, "status") == {"Synced": 1.0}
        assert prometheus.values(condition_expr, "condition") == {"Ready": 1.0}
        assert prometheus.values(f"reconciler_environment_health_status{{{selector}}} == 1", "status") == {
            "Healthy": 1.0
        }
        assert prometheus.values(
            f"reconciler_environment_inventory_objects{{{selector}}}", "environment"
        ) == {env: 3.0}
        started = time.monotonic()

        # a broken commit: OutOfSync and Stalled, and A stays the applied revision
        break_environment(repo)
        broken = repo.commit_and_push("break the render")
        wait_for(
            lambda: prometheus.values(status_expr, "status") == {"OutOfSync": 1.0},
            timeout=30,
            interval=0.2,
            what="Prometheus to see OutOfSync",
        )
        assert prometheus.values(condition_expr, "condition") == {"Stalled": 1.0}
        assert prometheus.values(revision_expr, "revision") == {first: 1.0}
        failed = prometheus.values(f"reconciler_syncs_total{{{selector}}}", "result")
        assert failed.get("RenderFailed", 0) >= 1, failed
        assert daemon.environment(env)["revision"] == broken

        # the fix: Synced at revision C, and revision A's series is gone
        write_environment(repo, namespace, note="2", password=secrets.token_hex(16), extra=False)
        fixed = repo.commit_and_push("fix the render, drop extra")
        wait_for(
            lambda: prometheus.values(revision_expr, "revision") == {fixed: 1.0},
            timeout=30,
            interval=0.2,
            what="Prometheus to see revision C replace revision A",
        )
        print(f"broken push -> fixed revision visible in Prometheus in {time.monotonic() - started:.1f} s")
        assert prometheus.values(status_expr, "status") == {"Synced": 1.0}
        assert prometheus.values(condition_expr, "condition") == {"Ready": 1.0}
        # Prometheus saw both revisions over time, one after the other
        history = prometheus.values(f"count_over_time({revision_expr}[5m])", "revision")
        assert set(history) == {first, fixed}, history
        wait_for(
            lambda: (
                prometheus.values(f"reconciler_environment_inventory_objects{{{selector}}}", "environment")
                == {env: 2.0}
            ),
            timeout=10,
            interval=0.2,
            what="the inventory size after the prune",
        )
        deleted = prometheus.values(
            f'sum by (kind) (reconciler_sync_objects_total{{{selector},action="deleted"}})', "kind"
        )
        assert deleted == {"ConfigMap": 1.0}, deleted
        stages = prometheus.values(
            f"sum by (stage) (reconciler_sync_stage_duration_seconds_count{{{selector}}})", "stage"
        )
        assert set(stages) == {"render", "plan", "validate", "apply", "health", "prune"}, stages
        assert (
            prometheus.values(
                'sum by (result) (reconciler_webhook_requests_total{provider="github"})', "result"
            )["accepted"]
            >= 2
        )
        assert prometheus.values("sum by (verb) (reconciler_kube_requests_total)", "verb").get("PATCH", 0) > 0
        assert prometheus.values("reconciler_git_fetches_total", "result").get("success", 0) >= 3
        assert prometheus.query("time() - reconciler_git_last_success_timestamp_seconds < 60")

        # every dashboard query is valid PromQL and uses only names this daemon exports
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=5) as response:  # noqa: S310
            exported = exported_names(response.read().decode())
        exprs, variables = dashboard_queries()
        assert len(exprs) >= 20
        for expr in exprs + variables:
            unknown = set(METRIC_NAME.findall(expr)) - exported
            assert not unknown, f"dashboard query uses metrics the daemon does not export: {unknown}: {expr}"
        for expr in exprs:
            prometheus.query(expr.replace("$__rate_interval", "1m").replace("$environment", ".*"))
        # and so do the alert rules (the promotion gauge comes from reconciler.promotion)
        rules = yaml.safe_load((MONITORING / "rules.yaml").read_text())
        for rule in rules["groups"][0]["rules"]:
            unknown = set(METRIC_NAME.findall(rule["expr"])) - exported - {"reconciler_promotions"}
            assert not unknown, f"alert {rule['alert']} uses metrics the daemon does not export: {unknown}"
            prometheus.query(rule["expr"])
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_environment_objects_events_and_logs_tell_the_story_without_leaking_secrets(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_sync: Any,
) -> None:
    """kubectl shows the Environment with its columns and kstatus conditions; its Events record the
    apply, the failure, the prune and a drift correction; every reconcile log line carries environment,
    revision and reconcile id; a Secret's value appears in none of logs, status API, metrics, Events or
    the Environment object."""
    canaries = [f"canary-{secrets.token_hex(12)}", f"canary-{secrets.token_hex(12)}"]
    write_environment(repo, namespace, note="1", password=canaries[0], extra=True)
    repo.commit_and_push("initial")
    env = env_name(namespace)
    daemon = start_daemon(tmp_path, repo, kubeconfig, toolchain, env)
    try:
        wait_for(lambda: daemon.environment(env).get("condition") == "Ready", what="the first sync")
        break_environment(repo)
        repo.commit_and_push("break the render")
        wait_for(lambda: daemon.environment(env).get("reason") == "RenderFailed", what="the render failure")
        write_environment(repo, namespace, note="2", password=canaries[1], extra=False)
        fixed = repo.commit_and_push("fix, rotate the password, drop extra")
        status = wait_for(
            lambda: (
                (s := daemon.environment(env)) and s["revision"] == fixed and s["condition"] == "Ready" and s
            ),
            what="the fixed revision to be Ready",
        )
        # the status API: conditions and the last ChangeSet
        assert status["appliedRevision"] == fixed
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
        changed = {(o["object"], o["action"]) for o in status["lastChangeSet"]["objects"]}
        assert (f"ConfigMap/{namespace}/staging-extra", "deleted") in changed, status["lastChangeSet"]
        assert (f"Secret/{namespace}/staging-credentials", "configured") in changed, status["lastChangeSet"]

        # the CLI reads the same status
        cli = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "status", "--server", daemon.url, "-o", "json"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        (listed,) = [e for e in json.loads(cli) if e["name"] == env]
        assert listed["appliedRevision"] == fixed
        assert listed["conditions"] == status["conditions"]

        # drift: an admin edits a managed field; the daemon puts it back and says so
        subprocess.run(
            [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), "-n", namespace, "patch", "configmap",
             "staging-settings", "--type", "merge", "-p", '{"data":{"note":"drifted"}}'],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_for(
            lambda: kube_sync("v1", "ConfigMap", namespace, "staging-settings")["data"] == {"note": "2"},
            what="the drift to be corrected",
        )

        wait_for(
            lambda: (
                daemon.metric("reconciler_drift_corrections_total", environment=env, result="corrected") == 1
            ),
            what="the drift correction to be counted",
        )
        assert daemon.metric("reconciler_events_total", outcome="created") >= 5

        # kubectl get environments: the printer columns
        table = subprocess.run(
            [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), "get", "environments", "-n",
             "reconciler-system", env],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        header, row = table.splitlines()[:2]
        columns = ["NAME", "CLUSTER", "REVISION", "SYNC", "OWNER", "HEALTH", "READY", "AGE"]
        assert header.split() == columns, table
        assert row.split()[:6] == [env, "local", fixed[:12], "Synced", "Healthy", "True"], table
        owner = header.index("OWNER")
        assert row[owner : owner + len("OWNER")].strip() == "", table  # no owner without sharding
        obj = kubectl_json(toolchain, kubeconfig, "get", "environment", "-n", "reconciler-system", env)
        assert obj["spec"]["path"] == "apps/staging"
        assert obj["status"]["revision"] == fixed
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert {c["type"]: c["status"] for c in obj["status"]["conditions"]} == conditions

        # the Events of the Environment tell the story
        def story() -> dict[str, list[str]]:
            events = kubectl_json(
                toolchain,
                kubeconfig,
                "get",
                "events",
                "-n",
                "reconciler-system",
                "--field-selector",
                f"involvedObject.name={env},involvedObject.kind=Environment",
            )["items"]
            found: dict[str, list[str]] = {}
            for event in events:
                found.setdefault(event["reason"], []).append(event["message"])
            return found

        reasons = wait_for(
            lambda: (
                (s := story())
                and {"Applied", "Synced", "RenderFailed", "Pruned", "DriftCorrected"} <= set(s)
                and s
            ),
            timeout=15,
            what="the Events of the environment",
        )
        assert any(f"ConfigMap/{namespace}/staging-extra" in m for m in reasons["Pruned"]), reasons
        assert any(f"ConfigMap/{namespace}/staging-settings" in m for m in reasons["DriftCorrected"]), reasons
        assert any("missing.yaml" in m for m in reasons["RenderFailed"]), reasons
        events_text = json.dumps(
            kubectl_json(toolchain, kubeconfig, "get", "events", "-n", "reconciler-system")
        ) + json.dumps(kubectl_json(toolchain, kubeconfig, "get", "events", "-n", namespace))

        # every line of a reconcile carries environment, revision and reconcile id
        lines = [
            json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")
        ]
        reconciles = [line for line in lines if line.get("reconcile_id")]
        assert {line["event"] for line in reconciles} >= {"sync started", "sync finished", "drift"}
        for line in reconciles:
            assert line.get("environment") == env, line
            assert line.get("revision"), line
        assert len({line["reconcile_id"] for line in reconciles if line["event"] == "sync started"}) >= 3

        # the canary values: nowhere
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=5) as response:  # noqa: S310
            metrics_text = response.read().decode()
        surfaces = {
            "the daemon's log": daemon.log_path.read_text(errors="replace"),
            "the status API": json.dumps(daemon.get_json("/api/v1/environments")),
            "/metrics": metrics_text,
            "Events": events_text,
            "the Environment object": json.dumps(obj),
        }
        for canary in canaries:
            forms = (canary, base64.b64encode(canary.encode()).decode())
            for surface, text in surfaces.items():
                leaked = any(form in text for form in forms)
                assert not leaked, f"a Secret value appears in {surface}"
        # and the canary really was applied (the check above is not vacuous)
        applied = kube_sync("v1", "Secret", namespace, "staging-credentials")["data"]["password"]
        rotated = applied == base64.b64encode(canaries[1].encode()).decode()
        assert rotated, "the rotated Secret was not applied"
    finally:
        assert daemon.stop() == 0, daemon.log()
