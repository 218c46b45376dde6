"""The admin kubeconfig of a local cluster."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from reconciler.devcluster import pki


def write_kubeconfig(path: Path, cluster_name: str, server: str, paths: pki.PkiPaths) -> None:
    """The admin kubeconfig of the cluster (context ``reconciler-<name>``), readable by its owner only."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    context = f"reconciler-{cluster_name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": b64(paths.ca_cert)},
            }
        ],
        "users": [
            {
                "name": f"{context}-admin",
                "user": {
                    "client-certificate-data": b64(paths.admin_cert),
                    "client-key-data": b64(paths.admin_key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-admin"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
