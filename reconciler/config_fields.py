"""Validation of configuration fields, shared by the daemon's settings and the promotion policy:
every error is a ``ConfigError`` whose message starts with the field (``environments[1].path: ...``)
and says what was expected."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# seconds per unit of a duration written as a string ("30s", "5m")
SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """``value`` when it is a ``kind`` (a bool is never taken for a number)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ConfigError(f"{where}: expected {what}, got {type(value).__name__} {value!r}")
    return value


def number(
    raw: Mapping[str, Any],
    key: str,
    where: str,
    default: float,
    minimum: float = 0.0,
    units: tuple[str, ...] = ("ms", "s", "m", "h"),
) -> float:
    """A number of seconds, or a duration string in one of ``units`` ("30s", "5m"), at least ``minimum``."""
    value = raw.get(key, default)
    if isinstance(value, str):
        alternatives = "|".join(sorted(units, key=len, reverse=True))
        match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*({alternatives})?\s*", value)
        if match is None:
            raise ConfigError(
                f"{where}.{key}: expected a number of seconds or a duration like 30s, 5m; got {value!r}"
            )
        value = float(match.group(1)) * SECONDS.get(match.group(2) or "s", 1.0)
    expect(value, (int, float), f"{where}.{key}", "a number")
    if float(value) < minimum:
        raise ConfigError(f"{where}.{key}: must be at least {minimum}, got {value}")
    return float(value)


def boolean(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    """``raw[key]`` as true or false."""
    return bool(expect(raw.get(key, default), bool, f"{where}.{key}", "true or false"))


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    """A mapping ({} for a missing one)."""
    if value is None:
        return {}
    return dict(expect(value, dict, where, "a mapping"))


def unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse fields outside ``allowed`` (a typo must not be ignored silently)."""
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


# words that mark a template value someone forgot to replace (deploy/'s examples used such values)
_PLACEHOLDER_WORDS = (
    "replace",
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "your-secret",
    "yoursecret",
    "secret-here",
    "todo",
    "xxxx",
    "dummy",
    "insecure",
)


def secret(value: str, where: str, minimum: int = 16) -> str:
    """``value`` when it can be a real secret: long enough, not a template placeholder, not a run of a
    few characters. The message never repeats the value."""
    how = "generate a random one, for example: openssl rand -hex 32"
    if len(value) < minimum:
        raise ConfigError(f"{where}: the secret is shorter than {minimum} characters; {how}")
    lowered = value.lower()
    word = next((w for w in _PLACEHOLDER_WORDS if w in lowered), "")
    if word:
        raise ConfigError(f"{where}: the secret looks like a placeholder (it contains {word!r}); {how}")
    if len(set(value)) < 6:
        raise ConfigError(f"{where}: the secret uses fewer than 6 distinct characters; {how}")
    return value
