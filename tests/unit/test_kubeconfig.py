"""Kubeconfigs read from Secrets: inline credentials only; file paths and credential plugins refused,
with the field named and never a credential in the message."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.devcluster import pki
from reconciler.kube.client import KubeClient
from reconciler.kube.kubeconfig import KubeconfigError, parse

TOKEN = "s3cr3t-token-value-never-printed"


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "remote",
                "cluster": cluster or {"server": "https://10.0.0.1:6443", "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": "deployer", "user": user}],
        "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "deployer"}}],
        "current-context": "remote",
    }


def dump(config: dict[str, Any]) -> bytes:
    return yaml.safe_dump(config).encode()


def test_inline_credentials_are_accepted() -> None:
    parsed = parse(dump(kubeconfig({"token": TOKEN})))
    assert parsed["users"][0]["user"]["token"] == TOKEN


@pytest.mark.parametrize(
    ("user", "cluster", "field"),
    [
        ({"exec": {"command": "/bin/sh", "args": ["-c", "id"]}}, None, "users[deployer].exec"),
        ({"auth-provider": {"name": "gcp"}}, None, "users[deployer].auth-provider"),
        (
            {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
            None,
            "users[deployer].tokenFile",
        ),
        (
            {"client-certificate": "/etc/key.crt", "client-key": "/etc/key"},
            None,
            "users[deployer].client-certificate",
        ),
        ({"token": TOKEN}, {"server": "https://x", "certificate-authority": "/etc/ca"}, "clusters[remote]"),
        ({"token": TOKEN}, {"certificate-authority-data": "eA=="}, "clusters[remote]: no server"),
    ],
)
def test_file_paths_and_credential_plugins_are_refused_by_field(
    user: dict[str, Any], cluster: dict[str, Any] | None, field: str
) -> None:
    with pytest.raises(KubeconfigError) as error:
        parse(dump(kubeconfig({**user, "token": TOKEN} if "token" not in user else user, cluster)))
    assert field in str(error.value)
    assert TOKEN not in str(error.value)


@pytest.mark.parametrize("data", [b"\xff\xfe", b"clusters: [", b"just a string", b"{}", b"clusters: []"])
def test_what_is_not_a_kubeconfig_is_refused_without_quoting_it(data: bytes) -> None:
    with pytest.raises(KubeconfigError) as error:
        parse(data)
    assert data.decode(errors="replace") not in str(error.value)


def test_yaml_errors_give_a_position_never_the_content() -> None:
    broken = f"users:\n- name: x\n  user: {{token: {TOKEN}\n".encode()
    with pytest.raises(KubeconfigError) as error:
        parse(broken)
    assert TOKEN not in str(error.value)
    assert "line" in str(error.value)


async def test_a_client_is_built_from_an_inline_kubeconfig(tmp_path: Path) -> None:
    """The client talks to the kubeconfig's server with its token; certificates land in ``temp_dir``."""
    paths = pki.generate(tmp_path / "pki", "remote", "10.0.0.1")
    cluster = {
        "server": "https://10.0.0.1:6443",
        "certificate-authority-data": base64.b64encode(paths.ca_cert.read_bytes()).decode(),
    }
    client = await KubeClient.from_kubeconfig_data(
        dump(kubeconfig({"token": TOKEN}, cluster)), None, tmp_path / "kc", request_timeout=7
    )
    try:
        assert client.host == "https://10.0.0.1:6443"
        assert client.request_timeout == 7
        assert (tmp_path / "kc").is_dir()
    finally:
        await client.close()


async def test_an_unknown_context_is_a_kubeconfig_error(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError):
        await KubeClient.from_kubeconfig_data(dump(kubeconfig({"token": TOKEN})), "nope", tmp_path)
