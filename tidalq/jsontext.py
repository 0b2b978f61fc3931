"""JSON text at tidalq's boundaries: what a client sends is parsed strictly, what an
upstream sends is repaired, so that everything stored can always be sent back out.

- ``NaN``, ``Infinity`` and numbers too large for a float are not JSON: refused.
- A lone UTF-16 surrogate (``"\\ud800"``) decodes in Python but can never be encoded as
  UTF-8 again: refused from clients, replaced by U+FFFD in upstream answers.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# where a surrogate can come from in JSON text: an escape, or (bytes) its UTF-8-like form
_SURROGATE_SOURCE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE_SOURCE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class BadJson(ValueError):
    """Raised when a client's JSON holds something tidalq cannot store and answer with."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"number {text[:20]} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise BadJson(f"{name} is not JSON")


def loads_strict(text: str | bytes) -> Any:
    """Parse a client's JSON; BadJson (a ValueError) for what cannot be answered with."""
    value = json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    if _has_lone_surrogate(value):
        raise BadJson("text holds a lone UTF-16 surrogate (not valid Unicode)")
    return value


def loads_repaired(text: str | bytes) -> Any:
    """Parse an upstream's JSON, replacing what cannot be stored (see the module doc).
    Most answers hold no surrogate at all: only those are walked to repair strings."""
    value = json.loads(text, parse_constant=lambda name: None, parse_float=_finite_or_none)
    return repair(value) if _may_hold_surrogates(text) else value


def _may_hold_surrogates(text: str | bytes) -> bool:
    if isinstance(text, str):
        return _SURROGATE_SOURCE.search(text) is not None
    if json.detect_encoding(text) != "utf-8":
        return True  # UTF-16 or -32 can carry a lone surrogate as it is: walk it
    return _SURROGATE_SOURCE_BYTES.search(text) is not None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def repair(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [repair(v) for v in value]
    if isinstance(value, dict):
        return {repair(k): repair(v) for k, v in value.items()}
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False
