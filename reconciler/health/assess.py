"""One function per kind: Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod,
PersistentVolumeClaim, Service, Ingress, HorizontalPodAutoscaler, PodDisruptionBudget,
CustomResourceDefinition, Namespace, APIService; everything else goes through ``generic``, which reads
``observedGeneration`` and the kstatus-style conditions (Ready, Stalled, Reconciling)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.objects import Body


class HealthStatus(enum.Enum):
    """Health of one object, declared from best to worst (``severity`` orders them)."""

    HEALTHY = "Healthy"
    SUSPENDED = "Suspended"
    PROGRESSING = "Progressing"
    UNKNOWN = "Unknown"
    MISSING = "Missing"
    DEGRADED = "Degraded"

    @property
    def severity(self) -> int:
        """0 for Healthy up to 5 for Degraded."""
        return list(HealthStatus).index(self)


@dataclass(frozen=True)
class Health:
    """A status and the reason for it, in words a user can act on."""

    status: HealthStatus
    message: str = ""

    @property
    def ready(self) -> bool:
        """True when a stage may go on: Healthy, or Suspended on purpose."""
        return self.status in (HealthStatus.HEALTHY, HealthStatus.SUSPENDED)


def _status(obj: Body) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _spec(obj: Body) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _conditions(obj: Body) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in _status(obj).get("conditions") or [] if isinstance(c, dict)}


def _condition_is(obj: Body, kind: str, value: str) -> bool:
    return _conditions(obj).get(kind, {}).get("status") == value


def _generation_pending(obj: Body) -> Health | None:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = _status(obj).get("observedGeneration")
    if generation is not None and observed is not None and int(observed) < int(generation):
        return Health(
            HealthStatus.PROGRESSING, f"waiting for the controller to observe generation {generation}"
        )
    if generation is not None and observed is None and _status(obj) == {}:
        return Health(HealthStatus.PROGRESSING, "waiting for the controller to report status")
    return None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


HEALTHY = Health(HealthStatus.HEALTHY)


def deployment(obj: Body) -> Health:
    """Paused is Suspended; a rollout past its deadline is Degraded; otherwise replica counts decide."""
    spec, status = _spec(obj), _status(obj)
    if spec.get("paused"):
        return Health(HealthStatus.SUSPENDED, "rollout is paused")
    pending = _generation_pending(obj)
    if pending:
        return pending
    progressing = _conditions(obj).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(
            HealthStatus.DEGRADED, f"rollout exceeded its progress deadline: {progressing.get('message', '')}"
        )
    wanted = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < wanted:
        return Health(HealthStatus.PROGRESSING, f"{updated} of {wanted} replicas updated")
    if total > updated:
        return Health(HealthStatus.PROGRESSING, f"{total - updated} old replicas pending termination")
    if available < updated:
        return Health(HealthStatus.PROGRESSING, f"{available} of {updated} updated replicas available")
    return Health(HealthStatus.HEALTHY, f"{available} of {wanted} replicas available")


def statefulset(obj: Body) -> Health:
    """Ready replicas and, for rolling updates, the current revision reaching the update revision."""
    spec, status = _spec(obj), _status(obj)
    pending = _generation_pending(obj)
    if pending:
        return pending
    wanted = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    if ready < wanted:
        return Health(HealthStatus.PROGRESSING, f"{ready} of {wanted} replicas ready")
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate":
        partition = _int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition"))
        updated = _int(status.get("updatedReplicas"))
        if (
            partition == 0
            and status.get("updateRevision")
            and status.get("currentRevision") != status.get("updateRevision")
        ):
            return Health(
                HealthStatus.PROGRESSING, f"{updated} of {wanted} replicas updated to the new revision"
            )
    return Health(HealthStatus.HEALTHY, f"{ready} of {wanted} replicas ready")


def daemonset(obj: Body) -> Health:
    """Every scheduled node runs an updated, available pod."""
    status = _status(obj)
    pending = _generation_pending(obj)
    if pending:
        return pending
    desired = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < desired:
        return Health(HealthStatus.PROGRESSING, f"{updated} of {desired} pods updated")
    if available < desired:
        return Health(HealthStatus.PROGRESSING, f"{available} of {desired} pods available")
    return Health(HealthStatus.HEALTHY, f"{available} of {desired} pods available")


def replicaset(obj: Body) -> Health:
    """Available replicas reach the spec; a ReplicaFailure condition is Degraded."""
    pending = _generation_pending(obj)
    if pending:
        return pending
    failure = _conditions(obj).get("ReplicaFailure", {})
    if failure.get("status") == "True":
        return Health(HealthStatus.DEGRADED, str(failure.get("message", "replica failure")))
    wanted = _int(_spec(obj).get("replicas"), 1)
    available = _int(_status(obj).get("availableReplicas"))
    if available < wanted:
        return Health(HealthStatus.PROGRESSING, f"{available} of {wanted} replicas available")
    return Health(HealthStatus.HEALTHY, f"{available} of {wanted} replicas available")


def job(obj: Body) -> Health:
    """Complete is Healthy, Failed is Degraded, suspended is Suspended, anything else is running."""
    conditions = _conditions(obj)
    if conditions.get("Failed", {}).get("status") == "True":
        failed = conditions["Failed"]
        return Health(
            HealthStatus.DEGRADED,
            f"job failed: {failed.get('reason', '')} {failed.get('message', '')}".strip(),
        )
    if conditions.get("Complete", {}).get("status") == "True":
        return Health(HealthStatus.HEALTHY, "job completed")
    if _spec(obj).get("suspend"):
        return Health(HealthStatus.SUSPENDED, "job is suspended")
    active = _int(_status(obj).get("active"))
    return Health(HealthStatus.PROGRESSING, f"job running ({active} active pods)")


def cronjob(obj: Body) -> Health:
    """A CronJob is Healthy unless suspended; its Jobs report their own health."""
    if _spec(obj).get("suspend"):
        return Health(HealthStatus.SUSPENDED, "cronjob is suspended")
    last = _status(obj).get("lastScheduleTime")
    return Health(HealthStatus.HEALTHY, f"last scheduled {last}" if last else "not scheduled yet")


_BAD_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
}


def pod(obj: Body) -> Health:
    """Succeeded or Running+Ready is Healthy; Failed or a crash/pull loop is Degraded."""
    status = _status(obj)
    phase = status.get("phase")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _BAD_WAITING:
            return Health(
                HealthStatus.DEGRADED, f"container {container.get('name')}: {waiting.get('reason')}"
            )
    if phase == "Succeeded":
        return Health(HealthStatus.HEALTHY, "pod completed")
    if phase == "Failed":
        return Health(
            HealthStatus.DEGRADED,
            f"pod failed: {status.get('reason', '')} {status.get('message', '')}".strip(),
        )
    if phase == "Running" and _condition_is(obj, "Ready", "True"):
        return Health(HealthStatus.HEALTHY, "pod running and ready")
    return Health(HealthStatus.PROGRESSING, f"pod {phase or 'pending'}, not ready yet")


def persistentvolumeclaim(obj: Body) -> Health:
    """Bound is Healthy, Lost is Degraded, Pending waits for a volume."""
    phase = _status(obj).get("phase")
    if phase == "Bound":
        return Health(HealthStatus.HEALTHY, "bound")
    if phase == "Lost":
        return Health(HealthStatus.DEGRADED, "the bound volume was lost")
    return Health(HealthStatus.PROGRESSING, "waiting for a volume to bind")


def service(obj: Body) -> Health:
    """A LoadBalancer Service needs an address; every other type is Healthy once created."""
    if _spec(obj).get("type") == "LoadBalancer":
        ingress = ((_status(obj).get("loadBalancer") or {}).get("ingress")) or []
        if not ingress:
            return Health(HealthStatus.PROGRESSING, "waiting for a load-balancer address")
        return Health(HealthStatus.HEALTHY, "load balancer ready")
    return HEALTHY


def ingress(obj: Body) -> Health:
    """Healthy once created; the message says whether a controller has published an address yet.

    Clusters without an ingress controller (or whose controller does not publish addresses) would
    otherwise never become Healthy, which would block every later wave.
    """
    addresses = ((_status(obj).get("loadBalancer") or {}).get("ingress")) or []
    if addresses:
        first = addresses[0]
        return Health(HealthStatus.HEALTHY, f"address {first.get('ip') or first.get('hostname')}")
    return Health(HealthStatus.HEALTHY, "no address published yet")


def horizontalpodautoscaler(obj: Body) -> Health:
    """Degraded when it cannot scale its target; missing metrics are reported but not Degraded.

    An autoscaler that lacks metrics leaves its workload as it is, which is not a failure of the
    environment; an autoscaler whose target is missing or unscalable is.
    """
    conditions = _conditions(obj)
    able = conditions.get("AbleToScale", {})
    if able.get("status") == "False":
        return Health(
            HealthStatus.DEGRADED, f"cannot scale: {able.get('reason', '')}: {able.get('message', '')}"
        )
    active = conditions.get("ScalingActive", {})
    if active.get("status") == "False":
        return Health(HealthStatus.HEALTHY, f"not scaling: {active.get('reason', '')}")
    return HEALTHY


def poddisruptionbudget(obj: Body) -> Health:
    """Enough healthy pods to allow the budget's disruptions."""
    pending = _generation_pending(obj)
    if pending:
        return pending
    status = _status(obj)
    current, desired = _int(status.get("currentHealthy")), _int(status.get("desiredHealthy"))
    if current < desired:
        return Health(HealthStatus.PROGRESSING, f"{current} of {desired} required pods healthy")
    return Health(HealthStatus.HEALTHY, f"{current} healthy pods, {desired} required")


def customresourcedefinition(obj: Body) -> Health:
    """Established is Healthy; names not accepted is Degraded."""
    conditions = _conditions(obj)
    if conditions.get("NamesAccepted", {}).get("status") == "False":
        return Health(
            HealthStatus.DEGRADED, f"names not accepted: {conditions['NamesAccepted'].get('message', '')}"
        )
    if conditions.get("Established", {}).get("status") == "True":
        return Health(HealthStatus.HEALTHY, "established")
    return Health(HealthStatus.PROGRESSING, "waiting to be established")


def namespace(obj: Body) -> Health:
    """Active is Healthy; Terminating is still going away."""
    phase = _status(obj).get("phase")
    if phase == "Active":
        return HEALTHY
    if phase == "Terminating":
        return Health(HealthStatus.PROGRESSING, "namespace is terminating")
    return Health(HealthStatus.PROGRESSING, "waiting to become active")


def apiservice(obj: Body) -> Health:
    """Available is Healthy; not available is Degraded with the aggregator's reason."""
    available = _conditions(obj).get("Available", {})
    if available.get("status") == "True":
        return HEALTHY
    if available.get("status") == "False":
        return Health(HealthStatus.DEGRADED, f"{available.get('reason', '')}: {available.get('message', '')}")
    return Health(HealthStatus.PROGRESSING, "waiting for availability")


def generic(obj: Body) -> Health:
    """kstatus-style: observedGeneration, then Stalled, Reconciling and Ready conditions; else Healthy."""
    pending = _generation_pending(obj)
    if pending and _status(obj):
        return pending
    conditions = _conditions(obj)
    stalled = conditions.get("Stalled", {})
    if stalled.get("status") == "True":
        return Health(
            HealthStatus.DEGRADED, str(stalled.get("message") or stalled.get("reason") or "stalled")
        )
    reconciling = conditions.get("Reconciling", {})
    if reconciling.get("status") == "True":
        return Health(HealthStatus.PROGRESSING, str(reconciling.get("message") or "reconciling"))
    ready = conditions.get("Ready", {})
    if ready.get("status") == "True":
        return Health(HealthStatus.HEALTHY, str(ready.get("message") or "ready"))
    if ready.get("status") == "False":
        return Health(
            HealthStatus.PROGRESSING, str(ready.get("message") or ready.get("reason") or "not ready")
        )
    return HEALTHY


_BY_KIND: dict[tuple[str, str], Callable[[Body], Health]] = {
    ("apps", "Deployment"): deployment,
    ("apps", "StatefulSet"): statefulset,
    ("apps", "DaemonSet"): daemonset,
    ("apps", "ReplicaSet"): replicaset,
    ("batch", "Job"): job,
    ("batch", "CronJob"): cronjob,
    ("", "Pod"): pod,
    ("", "PersistentVolumeClaim"): persistentvolumeclaim,
    ("", "Service"): service,
    ("networking.k8s.io", "Ingress"): ingress,
    ("autoscaling", "HorizontalPodAutoscaler"): horizontalpodautoscaler,
    ("policy", "PodDisruptionBudget"): poddisruptionbudget,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): customresourcedefinition,
    ("", "Namespace"): namespace,
    ("apiregistration.k8s.io", "APIService"): apiservice,
}


def assess(live: Body | None) -> Health:
    """The health of one live object (Missing when it does not exist)."""
    if live is None:
        return Health(HealthStatus.MISSING, "object does not exist")
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return Health(HealthStatus.PROGRESSING, "object is being deleted")
    api_version = str(live.get("apiVersion", ""))
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    check = _BY_KIND.get((group, str(live.get("kind", ""))), generic)
    try:
        return check(live)
    except (TypeError, ValueError, AttributeError) as exc:
        return Health(HealthStatus.UNKNOWN, f"status could not be read: {exc}")


def aggregate(healths: Iterable[Health]) -> HealthStatus:
    """The worst status of many (Healthy for none)."""
    worst = HealthStatus.HEALTHY
    for health in healths:
        if health.status.severity > worst.severity:
            worst = health.status
    return worst
