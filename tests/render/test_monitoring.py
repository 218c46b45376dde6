"""deploy/monitoring with the real tools: kustomize renders it, promtool checks and unit-tests the alert
rules, and the PrometheusRule embeds exactly the rules promtool tested."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.devcluster.build import Toolchain

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def run(args: list[str], cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_promtool_accepts_the_alert_rules(toolchain: Toolchain) -> None:
    """`promtool check rules`: valid PromQL, valid templates."""
    result = run([str(toolchain.promtool), "check", "rules", "rules.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alert_rules_pass(toolchain: Toolchain) -> None:
    """`promtool test rules`: each alert fires on its input series, not too early, not on followers."""
    result = run([str(toolchain.promtool), "test", "rules", "rules-test.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        test["alertname"]
        for case in yaml.safe_load((MONITORING / "rules-test.yaml").read_text())["tests"]
        for test in case["alert_rule_test"]
    }
    rules = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"][0]["rules"]
    assert tested == {rule["alert"] for rule in rules}, "every alert has a promtool test"


def test_the_rule_tests_can_fail(toolchain: Toolchain, tmp_path: Path) -> None:
    """A control: the same tests against a rule file with one threshold changed fail."""
    shutil.copy(MONITORING / "rules-test.yaml", tmp_path / "rules-test.yaml")
    broken = (MONITORING / "rules.yaml").read_text().replace("> 900", "> 9000")
    (tmp_path / "rules.yaml").write_text(broken)
    result = run([str(toolchain.promtool), "test", "rules", "rules-test.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "ReconcilerGitStale" in result.stdout + result.stderr


def test_the_prometheusrule_embeds_exactly_rules_yaml() -> None:
    """The Operator's PrometheusRule carries the groups promtool checked, unchanged."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    plain = yaml.safe_load((MONITORING / "rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == plain["groups"]


def test_kustomize_renders_the_monitoring_kustomization(toolchain: Toolchain) -> None:
    """ServiceMonitor, PrometheusRule and the dashboard ConfigMap, in reconciler-system."""
    result = run([str(toolchain.kustomize), "build", str(MONITORING)])
    assert result.returncode == 0, result.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout)}
    assert set(objects) == {
        ("ServiceMonitor", "reconciler"),
        ("PrometheusRule", "reconciler"),
        ("ConfigMap", "reconciler-dashboard"),
    }
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"reconciler-system"}
    monitor = objects[("ServiceMonitor", "reconciler")]["spec"]
    assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/name": "reconciler"}
    assert monitor["endpoints"][0]["port"] == "http"
    dashboard = objects[("ConfigMap", "reconciler-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["reconciler.json"])["uid"] == "reconciler-overview"


@pytest.mark.parametrize("path", ["servicemonitor.yaml", "prometheusrule.yaml"])
def test_monitoring_is_not_part_of_deploy_base(path: str) -> None:
    """deploy/base must apply without the Prometheus Operator's CRDs."""
    base = (MONITORING.parent / "base" / "kustomization.yaml").read_text()
    assert path not in base
    assert "monitoring" not in (MONITORING.parent / "kustomization.yaml").read_text()
