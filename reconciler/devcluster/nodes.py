"""The fake nodes of a local cluster: Node objects kwok keeps Ready, spread over three zones."""

from __future__ import annotations

from typing import Any

from reconciler.devcluster import versions
from reconciler.devcluster.errors import DevClusterError
from reconciler.devcluster.probes import Http

ZONES = ("zone-a", "zone-b", "zone-c")


def node_manifest(name: str, zone: str) -> dict[str, Any]:
    """A fake Node kwok manages (annotation ``kwok.x-k8s.io/node: fake``)."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/agent": "",
                "topology.kubernetes.io/zone": zone,
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"{versions.KWOK_VERSION}-kwok",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "kwok",
                "bootID": "",
                "kernelVersion": "",
                "machineID": "",
                "osImage": "",
                "systemUUID": "",
            },
        },
    }


def register_nodes(http: Http, count: int) -> None:
    """Create ``count`` fake nodes (those that exist already are kept)."""
    for index in range(count):
        node = node_manifest(f"kwok-node-{index}", ZONES[index % len(ZONES)])
        status, body = http.request("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise DevClusterError(
                step="register the fake nodes",
                message=f"creating Node {node['metadata']['name']} returned {status}: {body[:300]!r}",
            )
