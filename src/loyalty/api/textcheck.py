"""Limits on what a request body may carry, whatever its format.

Characters XML 1.0 cannot carry (PostgreSQL also refuses NUL) are refused in every request, so whatever is
stored can be answered in either format; nesting is capped so no body can exhaust the stack.
"""

from __future__ import annotations

import re
from typing import Any

from loyalty.domain.errors import InvalidParameter, InvalidRequest

MAX_DEPTH = 32
ILLEGAL_XML_CHARS = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffe\\uffff]")


def check_text(value: Any, name: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise InvalidRequest("The body nests too deeply")
    if isinstance(value, str):
        if ILLEGAL_XML_CHARS.search(value):
            raise InvalidParameter(name or "body", "contains a control character")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, name or "body", depth + 1)
            check_text(item, f"{name}.{key}" if name else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{name}[{i}]", depth + 1)
