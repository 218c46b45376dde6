"""HPA safety: never manage ``spec.replicas`` of a workload that an HPA in the same render scales.

Argo CD and Flux users fight endless OutOfSync loops when Git pins replicas and an autoscaler changes
them. Here the desired manifest of every workload targeted by a HorizontalPodAutoscaler of the render
simply does not contain ``spec.replicas``: reconciler neither sets it nor reports its changes as drift.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.objects import Manifest, ObjectKey


def hpa_targets(manifests: Sequence[Manifest]) -> dict[ObjectKey, ObjectKey]:
    """Workload key -> key of the HPA that scales it, for every HPA in the render."""
    targets: dict[ObjectKey, ObjectKey] = {}
    for manifest in manifests:
        key = manifest.key
        if key.kind != "HorizontalPodAutoscaler" or key.group != "autoscaling":
            continue
        ref = (manifest.body.get("spec") or {}).get("scaleTargetRef") or {}
        kind, name = ref.get("kind"), ref.get("name")
        if not kind or not name:
            continue
        api_version = str(ref.get("apiVersion") or "")
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        targets[ObjectKey(group, str(kind), key.namespace, str(name))] = key
    return targets


def release_autoscaled_replicas(manifests: Sequence[Manifest]) -> list[Manifest]:
    """The manifests with ``spec.replicas`` removed from every HPA-scaled workload."""
    targets = hpa_targets(manifests)
    result: list[Manifest] = []
    for manifest in manifests:
        spec = manifest.body.get("spec")
        if manifest.key in targets and isinstance(spec, dict) and "replicas" in spec:
            released = {field: value for field, value in spec.items() if field != "replicas"}
            result.append(manifest.with_body({**manifest.body, "spec": released}))
        else:
            result.append(manifest)
    return result


def owns_replicas(live: dict[str, object], manager: str) -> bool:
    """True when ``manager`` is an owner of ``spec.replicas`` per the live object's managedFields."""
    metadata = live.get("metadata")
    if not isinstance(metadata, dict):
        return False
    for entry in metadata.get("managedFields") or []:
        if entry.get("manager") != manager:
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            return True
    return False
