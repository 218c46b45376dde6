"""Parse a request body as one JSON object, refusing (400, short reason) whatever ``json.loads`` would
crash on or accept too loosely.

``json.loads`` alone raises ``RecursionError`` on deep nesting (``[[[[...]]]]``), ``ValueError`` on
integers longer than Python's digit limit, turns ``1e999999`` into ``inf``, accepts ``NaN`` and
``Infinity``, and keeps the last of duplicate keys (another parser may keep the first: a signed body
must mean one thing). Here the nesting depth is measured before parsing (linear time, no recursion),
numbers must be short and finite, keys unique, the text UTF-8 (strings too: no lone surrogate escapes)
and the top level an object.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from itertools import accumulate
from typing import Any

from reconciler.refusal import Refusal

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100

# one JSON string, or an unterminated one up to the end (so a failed match never restarts the scan:
# linear even on '"\"\"\"...'); possessive quantifiers never backtrack
_STRING = re.compile(r'"[^"\\]*+(?:\\.?[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 for an opening bracket, -1 (signed) closing
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Invalid(ValueError):
    """A JSON value this parser refuses (raised from the hooks of ``json.loads``)."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not count)."""
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    return max(accumulate(array("b", skeleton.translate(_STEPS))), default=0)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Invalid(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise _Invalid(f"{name} is not a JSON number")


def _number(literal: str) -> str:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Invalid(f"a number longer than {MAX_NUMBER_CHARS} characters")
    return literal


def _integer(literal: str) -> int:
    return int(_number(literal))


def _float(literal: str) -> float:
    value = float(_number(literal))
    if not math.isfinite(value):
        raise _Invalid(f"the number {literal[:20]} is out of range")
    return value


def loads_object(
    body: bytes, *, max_depth: int = MAX_DEPTH, error: type[Refusal] = Refusal
) -> dict[str, Any]:
    """``body`` as a JSON object; anything else raises ``error(400, reason)``."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(400, "the body is not UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise error(400, f"the body nests arrays or objects deeper than {max_depth} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique,
            parse_constant=_constant,
            parse_int=_integer,
            parse_float=_float,
        )
    except _Invalid as exc:
        raise error(400, f"the body is not acceptable JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise error(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise error(400, "the body is not a JSON object")
    if _SURROGATE_ESCAPE.search(text):  # escapes of UTF-16 halves: fine in pairs, not alone
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise error(400, "the body is not acceptable JSON: a string holds a lone surrogate") from None
    return value
