"""XML ⇄ dict for the `<xml>` bodies of the contract.

Reading is schema-driven: the command model says which fields are arrays (repeated elements, one or many) and
which are objects (nested elements). Free-form objects (`data`, `external_data`) map children to keys, and a
repeated child becomes a list. defusedxml refuses DTDs and entities, so nothing is ever expanded.
"""

from __future__ import annotations

import re
import types
import typing
from decimal import Decimal
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from pydantic import BaseModel

from loyalty.api.textcheck import ILLEGAL_XML_CHARS, MAX_DEPTH, check_text
from loyalty.domain.errors import InvalidRequest


def parse(body: bytes, model: type[BaseModel] | None) -> dict[str, Any]:
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise InvalidRequest("XML with a DTD or entities is refused") from None
    except ParseError as exc:
        raise InvalidRequest(f"The body is not well-formed XML: {exc}") from None
    out = _object(root, model, 0)
    check_text(out, "")
    return out


def _object(element: Element, model: type[BaseModel] | None, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidRequest("The body nests too deeply")
    out: dict[str, Any] = {}
    fields = model.model_fields if model is not None else {}
    for child in element:
        name = _local(child.tag)
        info = fields.get(name)
        shape, inner = _shape(info.annotation) if info is not None else ("free", None)
        value = _value(child, shape, inner, depth)
        if shape == "list":
            out.setdefault(name, []).append(value)
        elif name in out:
            # A repeated element the schema does not declare as an array still keeps every value.
            prior = out[name]
            out[name] = (prior if isinstance(prior, list) else [prior]) + [value]
        else:
            out[name] = value
    return out


def _value(element: Element, shape: str, inner: type[BaseModel] | None, depth: int) -> Any:
    if inner is not None:
        return _object(element, inner, depth + 1)
    if len(element) == 0:
        text = (element.text or "").strip()
        if shape in ("free", "dict") and not text:
            return {} if shape == "dict" else None
        return text if text else None
    return _object(element, None, depth + 1)


def _shape(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """Classify a field annotation: ("list"|"dict"|"scalar"|"free", nested model or None)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _shape(non_none[0])
        return "scalar", None
    if origin is list:
        item = args[0] if args else Any
        return "list", item if isinstance(item, type) and issubclass(item, BaseModel) else None
    if origin is dict:
        return "dict", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "dict", annotation
    if annotation is Any:
        return "free", None
    return "scalar", None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_XML_NAME = re.compile(r"[A-Za-z_][\w.\-]*")


def render(payload: dict[str, Any]) -> bytes:
    root = Element("xml")
    for key, value in payload.items():
        _append(root, key, value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="utf-8", xml_declaration=False)


def _append(parent: Element, name: str, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _append(parent, name, item)
        return
    if _XML_NAME.fullmatch(name):
        child = SubElement(parent, name)
    else:
        # Keys from free-form client data (external_data) need not be XML names: carry them in an attribute.
        child = SubElement(parent, "item", {"key": name})
    if isinstance(value, dict):
        for key, item in value.items():
            _append(child, str(key), item)
    elif value is None:
        pass
    elif isinstance(value, bool):
        child.text = "true" if value else "false"
    elif isinstance(value, (int, Decimal, str)):
        # Requests cannot bring such characters in (textcheck); older or imported data still renders well-formed.
        child.text = ILLEGAL_XML_CHARS.sub("\ufffd", str(value))
    else:
        raise TypeError(f"cannot render {type(value).__name__} as XML")
