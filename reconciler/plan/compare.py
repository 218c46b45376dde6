"""Does a live object already hold everything we want? A semantic "desired is a subset of live" check.

Server-side apply only ever changes the fields a manager declares, so an object has not drifted when
every field of the desired manifest is present in the live object with an equal value. Live objects
carry much more (defaults, status, fields of other managers), which is fine. Comparison rules:

* maps: every desired key must match; keys only in live are ignored;
* lists of maps with a merge key (``name``, ``mountPath``, ``containerPort``, ...): items are matched by
  that key, as server-side apply merges them; other lists must match item by item, same length;
* quantities compare by value (``500m`` equals ``0.5``, ``1Gi`` equals ``1024Mi``);
* an empty map or list in the manifest matches an absent field (the API server drops empty values);
* ``null`` in the manifest is ignored; ``status`` and metadata other than labels and annotations are
  not compared; a Secret's ``stringData`` is compared as the base64 ``data`` the server stores.

The check errs on the side of "drifted": a false "drifted" costs one dry-run request, a false
"unchanged" would hide drift.
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from reconciler.objects import Body

_MERGE_KEYS = ("name", "mountPath", "containerPort", "port", "devicePath", "ip", "topologyKey")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]{0,2})$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str) -> Decimal | None:
    """The numeric value of a Kubernetes quantity string, or None when it is not one."""
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return None
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        try:
            return base * (Decimal(10) ** int(suffix[1:]))
        except (InvalidOperation, ValueError):
            return None
    multiplier = _SUFFIX.get(suffix)
    return None if multiplier is None else base * multiplier


def normalize_desired(desired: Body) -> Body:
    """The manifest as the API server will store it, for comparison (Secret stringData -> data)."""
    if desired.get("kind") == "Secret" and desired.get("apiVersion") == "v1" and desired.get("stringData"):
        result = dict(desired)
        data = dict(result.get("data") or {})
        for key, value in (result.pop("stringData") or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        result["data"] = data
        return result
    return desired


def _is_empty(value: Any) -> bool:
    return value is None or value in ({}, [])


def _scalar_equal(desired: Any, live: Any) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return Decimal(str(desired)) == Decimal(str(live))
    if isinstance(desired, str) and isinstance(live, str):
        left, right = parse_quantity(desired), parse_quantity(live)
        return left is not None and right is not None and left == right
    if isinstance(desired, int | float) and isinstance(live, str):
        quantity = parse_quantity(live)
        return quantity is not None and quantity == Decimal(str(desired))
    return False


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in _MERGE_KEYS:
        values = [item.get(key) for item in items]
        if all(v is not None for v in values) and len(set(map(str, values))) == len(values):
            return key
    return None


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``desired`` is not contained in ``live`` (empty when it is)."""
    if desired is None:
        return []
    if isinstance(desired, dict):
        return _mapping_differences(desired, live, path)
    if isinstance(desired, list):
        return _list_differences(desired, live, path)
    return [] if _scalar_equal(desired, live) else [path]


def _mapping_differences(desired: dict[str, Any], live: Any, path: str) -> list[str]:
    if live is None and _is_empty(desired):
        return []
    if not isinstance(live, dict):
        return [path or "."]
    found: list[str] = []
    for key, value in desired.items():
        child = f"{path}.{key}"
        if key not in live:
            if not _is_empty(value):
                found.append(child)
            continue
        found.extend(differences(value, live[key], child))
    return found


def _list_differences(desired: list[Any], live: Any, path: str) -> list[str]:
    """Lists with a merge key (name, containerPort...) are compared item by item by that key, others
    position by position."""
    if live is None and not desired:
        return []
    if not isinstance(live, list):
        return [path]
    key = _merge_key(desired)
    found: list[str] = []
    if key is not None and all(isinstance(item, dict) for item in live):
        by_key = {str(item.get(key)): item for item in live}
        for item in desired:
            ident = str(item[key])
            if ident not in by_key:
                found.append(f"{path}[{key}={ident}]")
            else:
                found.extend(differences(item, by_key[ident], f"{path}[{key}={ident}]"))
        return found
    if len(desired) != len(live):
        return [path]
    for index, (left, right) in enumerate(zip(desired, live, strict=True)):
        found.extend(differences(left, right, f"{path}[{index}]"))
    return found


def drift(desired: Body, live: Body) -> list[str]:
    """Fields of the manifest that the live object does not hold (labels, annotations, spec, data...)."""
    normalized = normalize_desired(desired)
    found: list[str] = []
    metadata = normalized.get("metadata") or {}
    live_metadata = live.get("metadata") or {}
    for section in ("labels", "annotations"):
        found.extend(
            differences(metadata.get(section) or {}, live_metadata.get(section) or {}, f".metadata.{section}")
        )
    for key, value in normalized.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        if key not in live:
            if not _is_empty(value):
                found.append(f".{key}")
            continue
        found.extend(differences(value, live[key], f".{key}"))
    return found
