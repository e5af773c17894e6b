"""How a profile is found (altcraft-api.md §3) and how field values are normalised for lookup.

Lookup keys are canonical text: e-mails trimmed and lower-cased, phones reduced to `+` and digits, custom values
rendered by their declared type so that `123456` and `"123456"` meet.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from loyalty.domain.errors import InvalidParameter, MissingParameter
from loyalty.domain.model import FieldDef

MATCHING_MODES = ("email", "phone", "profile_id", "custom")
_PHONE_DROP = re.compile(r"[\s\-\.\(\)]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_PROFILE_ID = re.compile(r"^[0-9a-f]{24}$")


def normalise_email(value: str) -> str:
    return value.strip().lower()


def check_email(value: object, name: str = "email") -> str:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        raise InvalidParameter(name, f"{value!r} is not an e-mail address")
    return value.strip()


def normalise_phone(value: object, name: str = "phone") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidParameter(name, "must be a string")
    text = _PHONE_DROP.sub("", value.strip())
    plus = text.startswith("+")
    digits = text[1:] if plus else text
    if not (digits.isascii() and digits.isdigit()) or not 3 <= len(digits) <= 20:
        raise InvalidParameter(name, f"{value!r} is not a phone number")
    return "+" + digits


def check_profile_id(value: object) -> str:
    if not isinstance(value, str) or not _PROFILE_ID.match(value):
        raise InvalidParameter("profile_id", "must be 24 lowercase hex characters")
    return value


def coerce_field(field: FieldDef, value: Any) -> Any:
    """Turn a wire value into the field's declared type (JSON-safe: Decimal for float, ISO text for date)."""
    if value is None:
        return None
    name = field.name
    if field.type == "string":
        if isinstance(value, (dict, list, bool)):
            raise InvalidParameter(name, "must be a string")
        return str(value)
    if field.type == "int":
        if isinstance(value, bool):
            raise InvalidParameter(name, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, (str, Decimal)):
            text = str(value).strip()
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
        raise InvalidParameter(name, "must be an integer")
    if field.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
            raise InvalidParameter(name, "must be a number")
        try:
            dec = Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidParameter(name, "must be a number") from None
        if not dec.is_finite():
            raise InvalidParameter(name, "must be a finite number")
        return dec
    if field.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise InvalidParameter(name, "must be true or false")
    if field.type == "date":
        if isinstance(value, str):
            text = value.strip()
            try:
                if "T" in text:
                    return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
                return date.fromisoformat(text).isoformat()
            except ValueError:
                pass
        raise InvalidParameter(name, "must be a date (YYYY-MM-DD) or RFC 3339 date-time")
    raise InvalidParameter(name, f"unknown field type {field.type}")


def lookup_text(field: FieldDef, value: Any) -> str:
    """Canonical text of a typed value, used as the lookup key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text
    return str(value)


def match_value_text(field: FieldDef, value: Any) -> str:
    """A matching request's `field_value` as lookup text; values the type can't hold compare as plain text."""
    try:
        return lookup_text(field, coerce_field(field, value))
    except InvalidParameter:
        return str(value).strip()


def require_lookup(params: dict[str, Any], matching: str) -> dict[str, Any]:
    """Check the lookup fields of a matching mode are present; return them."""
    if matching not in MATCHING_MODES:
        raise InvalidParameter("matching", f"must be one of {', '.join(MATCHING_MODES)}")
    needed = {"email": ["email"], "phone": ["phone"], "profile_id": ["profile_id"],
              "custom": ["field_name", "field_value"]}[matching]
    out = {}
    for key in needed:
        value = params.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise MissingParameter(key)
        out[key] = value
    return out
