"""JSON text for stored client data, with exact numbers: Decimals are written as they came, never as floats."""

from __future__ import annotations

import json
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any


def dumps_canonical(value: Any) -> str:
    """Keys sorted: the same value always gives the same text (stored data, payload hashes)."""
    out: list[str] = []
    _encode(value, True, out)
    return "".join(out)


def dumps_ordered(value: Any) -> str:
    """Keys in insertion order: responses read in the order the contract lists fields."""
    out: list[str] = []
    _encode(value, False, out)
    return "".join(out)


# The C string encoder json.dumps ends up in; json.dumps itself builds an encoder object per call when given
# options, which cost more than the rest of a response's encoding.
_string = encode_basestring


def _encode(value: Any, sort: bool, out: list[str]) -> None:
    """Append the JSON text of `value` to `out`. Floats are refused: amounts never pass through them."""
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, Decimal)):
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=str) if sort else value):
            if i:
                out.append(",")
            out.append(_string(str(key)))
            out.append(":")
            _encode(value[key], sort, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, sort, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: `json.loads` with options builds a new one each time, which cost as much as parsing
# a request body. A decoder holds no state between calls, so threads may share it.
_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON with numbers as int/Decimal; NaN and Infinity are refused (they are not JSON)."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _EXACT.decode(text)
