"""The command lines of a local cluster's components (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) and the API server's audit policy."""

from __future__ import annotations

from pathlib import Path

from reconciler.devcluster import pki

SERVICE_CIDR = "10.96.0.0/16"
# Writes only (reads, and the constant lease renewals and Events, are left out), at Metadata level: who
# (user agent), what (verb, objectRef) and the response code, never a body. A dry-run is logged too; its
# requestURI carries dryRun=All.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
      - group: ""
        resources: ["events"]
      - group: events.k8s.io
        resources: ["events"]
  - level: Metadata
"""
ISSUER = "https://kubernetes.default.svc.cluster.local"


def etcd_args(data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    """A single-member etcd on loopback, without fsync (the cluster is thrown away)."""
    return [
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(
    directory: Path, port: int, etcd_url: str, paths: pki.PkiPaths, audit_policy: Path, audit_log: Path
) -> list[str]:
    """kube-apiserver on loopback: RBAC, the generated PKI, and the audit log of every write."""
    return [
        f"--etcd-servers={etcd_url}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--cert-dir={directory / 'apiserver-certs'}",
        f"--tls-cert-file={paths.serving_cert}",
        f"--tls-private-key-file={paths.serving_key}",
        f"--client-ca-file={paths.ca_cert}",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={paths.sa_pub}",
        f"--service-account-signing-key-file={paths.sa_key}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Pods get no token volume and need no default ServiceAccount to exist first: this avoids
        # the race between namespace creation and the ServiceAccount controller (as envtest does).
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        "--profiling=false",
        f"--audit-policy-file={audit_policy}",
        f"--audit-log-path={audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",
    ]


def controller_manager_args(kubeconfig: str, paths: pki.PkiPaths, cluster_name: str) -> list[str]:
    """kube-controller-manager: every controller but node IPAM, signing with the cluster CA."""
    return [
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
        f"--service-account-private-key-file={paths.sa_key}",
        f"--root-ca-file={paths.ca_cert}",
        f"--cluster-signing-cert-file={paths.ca_cert}",
        f"--cluster-signing-key-file={paths.ca_key}",
        "--use-service-account-credentials=false",
        f"--cluster-name={cluster_name}",
        "--controllers=*,-nodeipam",
    ]


def scheduler_args(kubeconfig: str) -> list[str]:
    """kube-scheduler, one instance, no serving port."""
    return [
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
    ]


def kwok_args(kubeconfig: str, stages: Path) -> list[str]:
    """kwok, managing the nodes annotated as fake, with the pinned stage configuration."""
    return [
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-lease-duration-seconds=40",
        "--server-address=",
        f"--config={stages}",
    ]
