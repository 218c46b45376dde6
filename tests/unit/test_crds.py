"""reconciler's CRDs: the package copies (installed by the daemon) equal deploy/base/crds (installed by
an administrator), deploy/base lists them, and the Environment CRD has what kubectl and kstatus need."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler import crds

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler" / "crds"
DEPLOY = ROOT / "deploy" / "base" / "crds"


def test_package_crds_equal_deploy_crds() -> None:
    """Same files, byte for byte, in both places."""
    package = {p.name: p.read_bytes() for p in PACKAGE.glob("*.yaml")}
    deploy = {p.name: p.read_bytes() for p in DEPLOY.glob("*.yaml")}
    assert package
    assert package.keys() == deploy.keys()
    for name, content in package.items():
        assert content == deploy[name], f"reconciler/crds/{name} differs from deploy/base/crds/{name}"


def test_deploy_base_installs_every_crd() -> None:
    """deploy/base/kustomization.yaml lists every CRD file."""
    resources = yaml.safe_load((ROOT / "deploy" / "base" / "kustomization.yaml").read_text())["resources"]
    assert {f"crds/{p.name}" for p in DEPLOY.glob("*.yaml")} <= set(resources)


def test_the_environment_crd_has_status_printer_columns_and_conditions() -> None:
    """Namespaced, status subresource, Cluster/Revision/Sync/Owner/Health/Ready/Age columns, kstatus
    conditions."""
    crd = next(c for c in crds.manifests() if c["spec"]["names"]["kind"] == "Environment")
    assert crd["spec"]["group"] == "reconciler.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Cluster", "Revision", "Sync", "Owner", "Health", "Ready", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"revision", "sync", "health", "conditions", "observedGeneration"} <= set(status)


def test_the_deployed_configuration_does_not_install_crds() -> None:
    """In a cluster the least-privilege identity cannot write CRDs: deploy/ installs them."""
    configmap = yaml.safe_load((ROOT / "deploy" / "base" / "configmap.yaml").read_text())
    assert yaml.safe_load(configmap["data"]["config.yaml"])["install_crds"] is False
