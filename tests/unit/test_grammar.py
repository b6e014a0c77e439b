"""JSON schema -> GBNF: the supported subset, the refusals that name a keyword, safe strings."""

from __future__ import annotations

from typing import Any

import pytest

from server.engine.grammar import GrammarBuilder, json_grammar, literal, schema_grammar
from server.errors import UnsupportedFeature


def rules(grammar: str) -> dict[str, str]:
    out = {}
    for line in grammar.splitlines():
        name, _, body = line.partition(" ::= ")
        out[name] = body
    return out


def test_json_grammar_is_an_object_with_safe_strings() -> None:
    r = rules(json_grammar())
    assert r["root"] == "json" and r["json"] == "object"
    assert r["char"].startswith(r'[^"\\\x7F\x00-\x1F]')  # no raw control characters


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "maxItems": 3},
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"type": ["number", "boolean"]},
        {"type": "string", "format": "date-time"},
        {"type": "string", "minLength": 1, "maxLength": 4},
        {"type": "string", "pattern": r"^\d{3}-[A-Z]+$"},
        {"const": {"k": [1, 2]}},
        {
            "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "integer"}}}},
            "type": "array",
            "items": {"$ref": "#/$defs/Item"},
        },
        {"type": "integer", "format": "int64", "title": "annotations are fine"},
    ],
)
def test_supported_schemas_convert(schema: dict[str, Any]) -> None:
    r = rules(schema_grammar(schema))
    assert r["root"] in r  # the start rule names a rule of the grammar


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "integer", "minimum": 0}, "'minimum'"),
        (
            {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}},
            "multipleOf",
        ),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"not": {"type": "string"}}, "'not'"),
        ({"type": "string", "format": "email"}, "'email'"),
        ({"type": "string", "pattern": "[^a]"}, "negated character class"),
        ({"type": "string", "pattern": r"^\S+$"}, r"\S"),
        ({"type": "string", "pattern": '^a"b$'}, "quote"),
        ({"type": "object", "required": ["missing"]}, "'missing'"),
        ({"type": "strnig"}, "strnig"),
        ({"$ref": "https://example.invalid/schema.json"}, "$ref"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties"),
    ],
)
def test_unsupported_keywords_are_named(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        schema_grammar(schema, param="response_format.json_schema.schema")
    assert named in info.value.message
    assert info.value.param == "response_format.json_schema.schema"
    assert info.value.code == "unsupported_parameter"


def test_patterns_are_anchored_and_class_escapes_translated() -> None:
    r = rules(schema_grammar({"type": "string", "pattern": r"\w+@\d"}))
    body = " ".join(r.values())
    assert "[a-zA-Z0-9_]" in body and "[0-9]" in body
    assert "\\d" not in body and "\\w" not in body


def test_dot_in_patterns_cannot_break_the_json_string() -> None:
    r = rules(schema_grammar({"type": "string", "pattern": "^a.c$"}))
    assert r["dot"] == r'[^"\\\x7F\x00-\x1F]'


def test_definitions_of_two_schemas_do_not_clash() -> None:
    builder = GrammarBuilder()
    a = {"$defs": {"X": {"type": "object", "properties": {"i": {"type": "integer"}}}}}
    b = {"$defs": {"X": {"type": "object", "properties": {"s": {"type": "string"}}}}}
    ra = builder.add_schema({**a, "$ref": "#/$defs/X"}, "args-0", param="p")
    rb = builder.add_schema({**b, "$ref": "#/$defs/X"}, "args-1", param="p")
    r = rules(builder.build(f"{ra} | {rb}"))
    assert '"\\"i\\""' in r["args-0-X"] + r.get("args-0-X-i-kv", "")
    assert '"\\"s\\""' in r["args-1-X"] + r.get("args-1-X-s-kv", "")


def test_the_caller_schema_is_not_modified() -> None:
    schema = {"$defs": {"X": {"type": "integer"}}, "$ref": "#/$defs/X"}
    schema_grammar(schema)
    assert schema == {"$defs": {"X": {"type": "integer"}}, "$ref": "#/$defs/X"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a\\b", '"a\\\\b"'),
        ("line\nnext\ttab", '"line\\x0Anext\\x09tab"'),
        ("héllo", '"héllo"'),
    ],
)
def test_literals_use_gbnf_escapes(text: str, expected: str) -> None:
    assert literal(text) == expected
