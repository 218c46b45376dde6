"""A stand-in volume provisioner for the local cluster, which has none: every Pending
PersistentVolumeClaim gets a matching hostPath PersistentVolume (its storage class, size and access
modes, pre-bound through ``claimRef``), so StatefulSets and PVCs of the demo and the tests bind.

It is a thread of the demo or the test process (kwok runs no kubelet, so nothing is ever mounted;
the PVs only let the PV controller bind claims, as a cloud provisioner would).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from reconciler.devcluster.cluster import Cluster, _Http


class VolumeProvisioner(threading.Thread):
    """Creates a PV for each Pending PVC of the cluster until ``stop()``."""

    def __init__(self, cluster: Cluster, interval: float = 0.3) -> None:
        super().__init__(name=f"volume-provisioner-{cluster.name}", daemon=True)
        state = cluster.load_state()
        if state is None:
            raise RuntimeError(f"cluster {cluster.name!r} is not running")
        self.http = _Http(state.server, cluster.pki_paths)
        self.interval = interval
        self.provisioned: list[str] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.provision_once()
            except (OSError, ValueError):
                continue  # the API server restarts in some tests; try again next pass

    def provision_once(self) -> list[str]:
        """One pass: a PV for every Pending claim; returns the names of the PVs created."""
        status, body = self.http.request("GET", "/api/v1/persistentvolumeclaims")
        if status != 200:
            return []
        created: list[str] = []
        for claim in json.loads(body).get("items", []):
            if (claim.get("status") or {}).get("phase") != "Pending" or claim["spec"].get("volumeName"):
                continue
            pv = self._volume_for(claim)
            status, _ = self.http.request("POST", "/api/v1/persistentvolumes", pv)
            if status == 201:
                created.append(pv["metadata"]["name"])
        self.provisioned.extend(created)
        return created

    @staticmethod
    def _volume_for(claim: dict[str, Any]) -> dict[str, Any]:
        meta, spec = claim["metadata"], claim["spec"]
        name = f"pv-{meta['uid']}"
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"reconciler.dev/dev-provisioner": "true"}},
            "spec": {
                "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Retain",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": f"/tmp/reconciler-dev-volumes/{name}"},  # noqa: S108 - never mounted
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
