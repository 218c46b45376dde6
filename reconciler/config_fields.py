"""The building blocks of the configuration's pydantic models, shared by the daemon's settings and the
promotion policy: the strict base model, durations, file paths resolved next to the configuration file,
the secret rule, and the translation of pydantic's ``ValidationError`` into a ``ConfigError`` with one
line per problem that starts with the field (``environments[1].path: ...``) and says what was expected.

Validators that need more than one field raise ``FieldError``, which names the field below the model it
was raised in (``FieldError(("pipelines[0].approvers", "'bob' is not in promotions.approvers"))``).
Validation context (``model_validate(raw, context=...)``): ``base`` (the configuration file's directory),
``environ`` (the environment variables) and, for the policy, ``environments`` (the configured names).
"""

from __future__ import annotations

import re
import types
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

# seconds per unit of a duration written as a string ("30s", "5m")
SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration is invalid; each line of the message names a field."""


class FieldError(ValueError):
    """Problems found by a validator, each as (field below the validated model, message)."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


class StrictModel(BaseModel):
    """A section of the configuration: exact types (no "2m" for a number, no 42 for a name), and no
    field that the model does not know (a typo must not be ignored silently)."""

    model_config = ConfigDict(strict=True, extra="forbid")


def empty_if_none(value: Any) -> Any:
    """``key:`` with nothing after it in YAML is None: read it as an empty section or list."""
    return {} if value is None else value


def empty_list_if_none(value: Any) -> Any:
    """A list written as ``key:`` with nothing after it."""
    return [] if value is None else value


T = TypeVar("T")
# a list; ``key:`` with nothing after it in YAML is an empty one
Items = Annotated[list[T], BeforeValidator(empty_list_if_none)]
# on a section's annotation: ``key:`` with nothing after it is an empty section
Section = BeforeValidator(empty_if_none)


def _seconds(value: Any, units: Sequence[str]) -> Any:
    if not isinstance(value, str):
        return value
    alternatives = "|".join(sorted(units, key=len, reverse=True))
    match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*({alternatives})?\s*", value)
    if match is None:
        raise ValueError(f"expected a number of seconds or a duration like 30s, 5m; got {value!r}")
    return float(match.group(1)) * SECONDS.get(match.group(2) or "s", 1.0)


# a number of seconds, or a string such as "30s", "5m", "250ms", "1h" (the policy's also "1d")
Duration = Annotated[float, BeforeValidator(lambda v: _seconds(v, ("ms", "s", "m", "h"))), Field(ge=0)]
PolicyDuration = Annotated[float, BeforeValidator(lambda v: _seconds(v, ("s", "m", "h", "d"))), Field(ge=0)]


def resolve(value: str, base: Path) -> Path:
    """``value`` as an absolute path, a relative one taken from the configuration file's directory."""
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def base_of(info: ValidationInfo) -> Path:
    """The configuration file's directory from the validation context."""
    context = info.context or {}
    return Path(context.get("base", "."))


def environ_of(info: ValidationInfo) -> Mapping[str, str]:
    """The environment variables from the validation context."""
    context = info.context or {}
    environ: Mapping[str, str] = context.get("environ", {})
    return environ


def existing_file(value: str | None, info: ValidationInfo) -> str | None:
    """A field validator: the path (relative to the configuration file) must exist."""
    if value is None:
        return None
    if not value:
        raise ValueError("expected a file path, got ''")
    path = resolve(value, base_of(info))
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    return str(path)


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


def secret_problem(value: str, minimum: int = 16) -> str:
    """Why ``value`` cannot be a real secret ("" when it can): too short, a template placeholder, or a
    run of a few characters. The answer never repeats the value."""
    how = "generate a random one, for example: openssl rand -hex 32"
    if len(value) < minimum:
        return f"the secret is shorter than {minimum} characters; {how}"
    lowered = value.lower()
    word = next((w for w in _PLACEHOLDER_WORDS if w in lowered), "")
    if word:
        return f"the secret looks like a placeholder (it contains {word!r}); {how}"
    if len(set(value)) < 6:
        return f"the secret uses fewer than 6 distinct characters; {how}"
    return ""


def secret(value: str, where: str, minimum: int = 16) -> str:
    """``value`` when it can be a real secret, else a ``ConfigError`` naming ``where`` (not the value)."""
    problem = secret_problem(value, minimum)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return value


# -- validation and its messages --------------------------------------------------------------------
def validate(
    model: type[M], raw: Any, root: str, context: Mapping[str, Any], sections: Collection[str] = ()
) -> M:
    """``raw`` validated as ``model``, or a ``ConfigError`` with one line per problem.

    Fields are named below ``root`` (``promotions.pipelines[0].approvers``), except that a top-level
    field in ``sections`` is named on its own (``environments[1].path`` rather than
    ``config.environments[1].path``).
    """
    try:
        return model.model_validate(raw, context=dict(context))
    except ValidationError as exc:
        lines = list(dict.fromkeys(describe(exc.errors(include_url=False), model, root, sections)))
        raise ConfigError("\n".join(lines)) from None


def describe(
    errors: Sequence[ErrorDetails], model: type[BaseModel], root: str, sections: Collection[str] = ()
) -> Iterator[str]:
    """One ``field: what was expected`` line per problem; unknown fields of one section on one line."""
    unknown: dict[tuple[int | str, ...], list[str]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        exception = (error.get("ctx") or {}).get("error")
        if isinstance(exception, FieldError):
            for below, message in exception.problems:
                yield f"{join(root, loc, sections, below)}: {message}"
            continue
        yield f"{join(root, loc, sections)}: {_message(error, model, loc)}"
    for parent, names in unknown.items():
        allowed = _allowed(model, parent)
        known = f" (allowed: {', '.join(allowed)})" if allowed else ""
        yield f"{join(root, parent, sections)}: unknown field(s) {', '.join(sorted(names))}{known}"


def join(root: str, loc: Sequence[int | str], sections: Collection[str] = (), below: str = "") -> str:
    """The path of the field at ``loc`` (and ``below`` it) as the configuration's messages write it."""
    first = loc[0] if loc else re.split(r"[.\[]", below, maxsplit=1)[0]
    path = "" if first in sections else root
    for key in loc:
        path += f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
    if below:
        path += below if below.startswith("[") or not path else f".{below}"
    return path


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
}


def _message(error: ErrorDetails, model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        _, description = _annotation_at(model, loc)
        return f"required ({description})" if description else "required"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _EXPECTED:
        _, description = _annotation_at(model, loc)
        return f"expected {description or _EXPECTED[kind]}, got {type(value).__name__} {_short(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {_short(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {_short(value)}"
    if kind == "literal_error":
        return f"expected one of {ctx['expected']}, got {_short(value)}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {type(value).__name__} {_short(value)}"


def _unwrap(annotation: Any) -> tuple[Any, str]:
    """``annotation`` without Optional and Annotated, and the description its Annotated gives."""
    description = ""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            args = get_args(annotation)
            described = [a.description for a in args[1:] if isinstance(a, FieldInfo) and a.description]
            description = described[0] if described else description
            annotation = args[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation, description
            annotation = rest[0]
        else:
            return annotation, description


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    return next((f for n, f in model.model_fields.items() if key in (n, f.alias)), None)


def _annotation_at(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[Any, str]:
    """The annotation of the field at ``loc`` and what it expects, as its ``description`` says."""
    annotation: Any = model
    description = ""
    for key in loc:
        annotation, _ = _unwrap(annotation)
        if isinstance(key, int):
            args = get_args(annotation)
            annotation, description = (args[0] if args else Any), ""
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = _field(annotation, key)
            if field is None:
                return Any, ""
            annotation, description = field.annotation, field.description or ""
        else:
            return Any, ""
        annotation, described = _unwrap(annotation)
        description = described or description
    return annotation, description


def _allowed(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    annotation, _ = _annotation_at(model, loc)
    annotation, _ = _unwrap(annotation)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return []
    return sorted(f.alias or n for n, f in annotation.model_fields.items() if not f.exclude)
