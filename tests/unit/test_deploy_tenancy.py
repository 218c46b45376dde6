"""deploy/ as rendered by kustomize: it ships no Secret (so applying it never overwrites a real one with
a known value), and it grants the daemon ``impersonate`` on exactly the ServiceAccounts its
configuration names, nothing wider."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster import tenants
from reconciler.devcluster.build import find_kubectl
from reconciler.settings import parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "overlays" / "example"


def render(directory: Path) -> list[dict[str, Any]]:
    output = subprocess.run(
        [str(find_kubectl()), "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(output) if d]


@pytest.mark.parametrize("directory", [ROOT / "deploy", EXAMPLE], ids=["deploy", "example"])
def test_deploy_renders_no_secret(directory: Path) -> None:
    """Neither the base nor the example overlay contains a Secret (the templates overwrote real ones)."""
    assert [d["metadata"]["name"] for d in render(directory) if d["kind"] == "Secret"] == []


def test_the_example_tenants_file_is_the_generators_output() -> None:
    """tenants.yaml is exactly what reconciler.devcluster.tenants makes for the configured tenants."""
    committed = [d for d in yaml.safe_load_all((EXAMPLE / "tenants.yaml").read_text()) if d]
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    namespaces = [
        e["service_account"].split("/")[0] for e in config["environments"] if "service_account" in e
    ]
    daemon = {"kind": "ServiceAccount", "name": "reconciler", "namespace": "reconciler-system"}
    assert committed == tenants.platform_objects(namespaces, daemon)


def test_impersonation_is_granted_for_exactly_the_configured_service_accounts(tmp_path: Path) -> None:
    """Every ``impersonate`` grant in the rendered example names ServiceAccounts by name and is bound
    (per namespace) to the daemon only for the configured ones; the configuration itself is valid."""
    documents = render(EXAMPLE)
    configmap = next(
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "reconciler-config"
    )
    raw = yaml.safe_load(configmap["data"]["config.yaml"])
    (tmp_path / "git").mkdir()
    raw["repository"]["credentials"]["token_file"] = str(tmp_path / "git")
    raw["webhooks"]["github"]["secret_file"] = str(tmp_path / "secret")
    (tmp_path / "secret").write_text("9f86d081884c7d659a2feaa0c55ad015")
    settings = parse(raw, tmp_path)
    configured = {e.service_account for e in settings.environments if e.service_account}
    assert configured, "the example runs tenants"

    impersonating_roles = {
        d["metadata"]["name"]
        for d in documents
        if d["kind"] in ("ClusterRole", "Role")
        and any("impersonate" in rule.get("verbs", []) or "*" in rule.get("verbs", []) for rule in d["rules"])
    }
    for document in documents:
        if document["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in document["rules"]:
            if "impersonate" in rule.get("verbs", []):
                assert rule["resources"] == ["serviceaccounts"], document["metadata"]["name"]
                assert rule.get("resourceNames"), f"{document['metadata']['name']}: impersonate without names"
    granted: set[str] = set()
    for document in documents:
        if document["kind"] == "ClusterRoleBinding":
            assert document["roleRef"]["name"] not in impersonating_roles, "impersonation cluster-wide"
        if document["kind"] == "RoleBinding" and document["roleRef"]["name"] in impersonating_roles:
            role = next(d for d in documents if d["metadata"]["name"] == document["roleRef"]["name"])
            names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
            for name in names:
                granted.add(f"{document['metadata']['namespace']}/{name}")
    assert granted == configured
