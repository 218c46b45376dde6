"""``depends_on``: an environment whose custom resources need another environment's CRD waits for it,
instead of failing with "no matches for kind" and retrying."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from tests.e2e.conftest import Repo, daemon_config
from tests.helpers import wait_for
from tests.support import config_map, custom_resource_definition

pytestmark = pytest.mark.cluster


def test_an_environment_waits_for_the_environments_it_depends_on(
    tmp_path: Path, repo: Repo, kubeconfig: Path, toolchain: Toolchain, namespace: str, kube_sync: Any
) -> None:
    """apps holds a Gadget whose CRD the crds environment brings. apps is listed (and queued) first,
    yet its only sync is a successful one: it is held back until crds is Ready, then synced at once."""
    group = f"{namespace}.example.dev"
    gadget = {
        "apiVersion": f"{group}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": namespace},
    }
    repo.write("crds/kustomization.yaml", "resources: [crd.yaml]\n")
    spec = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    repo.write("crds/crd.yaml", [custom_resource_definition(group, "Gadget", spec)])
    repo.write("apps/kustomization.yaml", "resources: [objects.yaml]\n")
    repo.write("apps/objects.yaml", [gadget, config_map("settings", namespace)])
    repo.commit_and_push("initial")
    apps, crds = f"{namespace[:40]}-apps", f"{namespace[:40]}-crds"
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            {"name": apps, "path": "apps", "depends_on": [crds]},
            {"name": crds, "path": "crds"},
        ],
    )
    daemon.start(toolchain)
    try:
        wait_for(lambda: daemon.environment(apps).get("condition") == "Ready", timeout=60, what="apps Ready")
        lines = [
            json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")
        ]
        finished = [line for line in lines if line.get("event") == "sync finished"]
        assert [line["reason"] for line in finished if line.get("environment") == apps] == ["Succeeded"]
        assert [line["reason"] for line in finished if line.get("environment") == crds] == ["Succeeded"]
        held = [
            line
            for line in lines
            if line.get("event") == "sync held back" and line.get("environment") == apps
        ]
        assert held, "apps was never held back"
        assert crds in held[0]["reason"]
        assert kube_sync(f"{group}/v1", "Gadget", namespace, "g")
    finally:
        assert daemon.stop() == 0
