"""JSON text for stored client data, with exact numbers: Decimals are written as they came, never as floats."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def dumps_canonical(value: Any) -> str:
    """Keys sorted: the same value always gives the same text (stored data, payload hashes)."""
    return "".join(_encode(value, True))


def dumps_ordered(value: Any) -> str:
    """Keys in insertion order: responses read in the order the contract lists fields."""
    return "".join(_encode(value, False))


def _encode(value: Any, sort: bool):  # type: ignore[no-untyped-def]
    if value is None:
        yield "null"
    elif value is True:
        yield "true"
    elif value is False:
        yield "false"
    elif isinstance(value, (int, Decimal)):
        yield str(value)
    elif isinstance(value, str):
        yield json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        yield "{"
        for i, key in enumerate(sorted(value, key=str) if sort else value):
            if i:
                yield ","
            yield json.dumps(str(key), ensure_ascii=False)
            yield ":"
            yield from _encode(value[key], sort)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _encode(item, sort)
        yield "]"
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
