"""What a local cluster records about itself (``state.json``: ports, pids, executables and commands
of its processes) and the status ``dev-cluster status`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClusterState:
    """What ``up`` recorded about a running cluster (persisted as state.json)."""

    name: str
    kubeconfig: str
    server: str
    kubernetes_version: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    executables: dict[str, str] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    started_at: float = 0.0


@dataclass(frozen=True)
class ProcessStatus:
    """Whether one recorded process still runs."""

    name: str
    pid: int
    alive: bool


@dataclass(frozen=True)
class ClusterStatus:
    """The health of one cluster directory, for ``dev-cluster status``."""

    name: str
    state: str  # running | degraded | stopped
    server: str
    kubeconfig: str
    processes: tuple[ProcessStatus, ...]
