"""loyalty.api.xmlcodec: schema-driven XML reading and rendering (altcraft-api.md §1 "XML shape")."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from loyalty.api import xmlcodec
from loyalty.domain.errors import InvalidRequest
from loyalty.services.commands import AccrueCmd, ProfileAddCmd


class Line(BaseModel):
    external_id: str
    count: int
    tags: list[str] = []


class Order(BaseModel):
    total_price: str
    lines: list[Line] = []


class Cmd(BaseModel):
    token: str | None = None
    ids: list[int] = []
    names: list[str] | None = None
    order: Order | None = None
    data: dict[str, Any] | None = None
    free: Any = None
    flag: bool = False


def parse(xml: str, model: type[BaseModel] | None = Cmd) -> dict[str, Any]:
    return xmlcodec.parse(xml.encode("utf-8"), model)


def test_one_element_of_a_list_field_is_still_a_list():
    assert parse("<xml><ids>7</ids></xml>") == {"ids": ["7"]}
    assert parse("<xml><names>a</names></xml>") == {"names": ["a"]}  # Optional[list] too


def test_repeated_elements_of_a_list_field_keep_their_order():
    assert parse("<xml><ids>3</ids><ids>1</ids><ids>2</ids></xml>") == {"ids": ["3", "1", "2"]}


def test_nested_object_reads_through_its_own_model():
    out = parse("<xml><order><total_price>10.50</total_price><lines><external_id>L1</external_id><count>2</count>"
                "<tags>x</tags></lines></order></xml>")
    assert out == {"order": {"total_price": "10.50",
                             "lines": [{"external_id": "L1", "count": "2", "tags": ["x"]}]}}
    assert Cmd.model_validate(out).order.lines[0].tags == ["x"]


def test_list_of_nested_objects_with_several_items():
    out = parse("<xml><order><lines><external_id>A</external_id><count>1</count></lines>"
                "<lines><external_id>B</external_id><count>3</count></lines></order></xml>")
    assert [line["external_id"] for line in out["order"]["lines"]] == ["A", "B"]


def test_free_form_object_maps_children_and_repeats_become_lists():
    out = parse("<xml><data><email>a@b.c</email><phones>+1 555</phones><phones>+1 556</phones>"
                "<address><city>Riga</city></address></data></xml>")
    assert out == {"data": {"email": "a@b.c", "phones": ["+1 555", "+1 556"], "address": {"city": "Riga"}}}


def test_empty_free_form_object_is_an_empty_dict_and_empty_scalar_is_none():
    assert parse("<xml><data/><token></token><free/></xml>") == {"data": {}, "token": None, "free": None}


def test_scalar_text_is_trimmed_and_stays_text():
    assert parse("<xml><token>\n  abc  \n</token><flag>true</flag></xml>") == {"token": "abc", "flag": "true"}


def test_unknown_elements_are_read_generically():
    assert parse("<xml><extra>1</extra><extra>2</extra><other>x</other></xml>") == {
        "extra": ["1", "2"], "other": "x"}


def test_parse_without_a_model_reads_everything_generically():
    assert parse("<xml><a>1</a><b><c>2</c></b></xml>", None) == {"a": "1", "b": {"c": "2"}}


def test_namespaces_are_stripped_from_element_names():
    assert parse('<xml xmlns="urn:x"><token>t</token><ids>1</ids></xml>') == {"token": "t", "ids": ["1"]}


def test_command_models_drive_the_reading_of_real_bodies():
    body = parse("<xml><db_id>1</db_id><data><email>a@b.c</email><card_no>5</card_no></data></xml>", ProfileAddCmd)
    assert body == {"db_id": "1", "data": {"email": "a@b.c", "card_no": "5"}}
    cmd = ProfileAddCmd.model_validate(body)
    assert cmd.db_id == 1
    accrue = parse("<xml><loyalty_program_id>123</loyalty_program_id><external_data><k>v</k></external_data>"
                   "</xml>", AccrueCmd)
    assert accrue["external_data"] == {"k": "v"}


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "boom">]><xml><token>&e;</token></xml>',
        '<!DOCTYPE xml SYSTEM "http://example.com/x.dtd"><xml><token>t</token></xml>',
        '<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><token>&x;</token></xml>',
        '<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><token>&c;</token></xml>',
        "<!DOCTYPE xml><xml/>",
    ],
)
def test_dtds_and_entities_are_refused(body):
    with pytest.raises(InvalidRequest) as info:
        xmlcodec.parse(body.encode(), Cmd)
    assert info.value.error == 400


@pytest.mark.parametrize("body", [b"<xml>", b"<xml><a></xml>", b"not xml", b"<xml></xml><xml></xml>",
                                  b"<xml>&unknown;</xml>", b"\xff\xfe<xml/>"])
def test_malformed_xml_is_an_invalid_request(body):
    with pytest.raises(InvalidRequest) as info:
        xmlcodec.parse(body, Cmd)
    assert info.value.code == "invalid_request"


def test_render_writes_xml_root_scalars_lists_and_nested_objects():
    out = xmlcodec.render({"error": 0, "error_text": "Successful operation", "flag": True, "off": False,
                           "amount": Decimal("100.50"), "none": None, "data": [{"id": 1}, {"id": 2}],
                           "obj": {"inner": "x"}})
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = fromstring(out)
    assert root.tag == "xml"
    assert root.findtext("error") == "0"
    assert root.findtext("flag") == "true" and root.findtext("off") == "false"
    assert root.findtext("amount") == "100.50"
    assert root.find("none") is not None and not root.findtext("none")
    assert [d.findtext("id") for d in root.findall("data")] == ["1", "2"]
    assert root.find("obj").findtext("inner") == "x"


def test_render_escapes_markup_in_text():
    out = xmlcodec.render({"error_text": "a < b & c > \"d\""})
    assert fromstring(out).findtext("error_text") == "a < b & c > \"d\""


def test_render_refuses_binary_floats():
    with pytest.raises(TypeError):
        xmlcodec.render({"amount": 1.5})


def test_render_then_parse_round_trips_through_the_schema():
    payload = {"token": "abc", "ids": [5], "names": ["x", "y"], "flag": True,
               "order": {"total_price": "9.99", "lines": [{"external_id": "L", "count": 1, "tags": ["t"]}]},
               "data": {"email": "a@b.c", "n": 3}}
    parsed = xmlcodec.parse(xmlcodec.render(payload), Cmd)
    assert parsed == {"token": "abc", "ids": ["5"], "names": ["x", "y"], "flag": "true",
                      "order": {"total_price": "9.99", "lines": [{"external_id": "L", "count": "1",
                                                                  "tags": ["t"]}]},
                      "data": {"email": "a@b.c", "n": "3"}}
    cmd = Cmd.model_validate(parsed)
    assert cmd.ids == [5] and cmd.flag is True and cmd.order.lines[0].count == 1


_NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True).filter(lambda n: not n.lower().startswith("xml"))
# Text XML 1.0 can carry, without leading/trailing whitespace (the reader trims) and not empty (empty → None).
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
                min_size=1, max_size=20).filter(lambda s: s == s.strip() and "\ufffe" not in s and "\uffff" not in s)


@given(st.dictionaries(_NAME, st.one_of(_TEXT, st.lists(_TEXT, min_size=1, max_size=3)), max_size=6))
def test_render_then_generic_parse_round_trips_flat_text_payloads(payload):
    parsed = xmlcodec.parse(xmlcodec.render(payload), None)
    expected = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in payload.items()}
    assert parsed == expected


@pytest.mark.parametrize("key", ["1st", "a b", "a&b", ""])
def test_render_gives_well_formed_xml_for_any_free_form_key(key):
    fromstring(xmlcodec.render({"data": {"external_data": {key: "v"}}}))


@pytest.mark.parametrize("text", ["a\x01b", "\x0b", "x\x1fy"])
def test_render_gives_well_formed_xml_for_text_with_control_characters(text):
    fromstring(xmlcodec.render({"error_text": text}))
