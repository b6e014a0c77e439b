"""GBNF grammars from JSON schemas (llama-cpp-python's converter, made safe for JSON output).

Schemas are first checked against the subset the converter honours (schema_subset.py). Two
converter rules are also tightened: its `char` and `.` admit raw control characters, quotes and
backslashes, which would make strings that `json.loads` rejects.
"""

from __future__ import annotations

import copy
from typing import Any

from server.engine.schema_subset import check_schema
from server.errors import UnsupportedFeature

# A JSON string character: no quote, backslash or control character (escapes stay allowed).
_SAFE_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_SAFE_DOT = r'[^"\\\x7F\x00-\x1F]'


def literal(text: str) -> str:
    """`text` as a GBNF string literal (GBNF has fewer escapes than JSON: no \\b, no \\f)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\x{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class GrammarBuilder:
    """Collects the rules of one grammar: JSON-schema rules plus hand-written ones."""

    def __init__(self) -> None:
        from llama_cpp import llama_grammar  # loads libllama: only when a grammar is built

        converter: Any = llama_grammar.SchemaConverter
        self._conv: Any = converter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self._extra: dict[str, str] = {}

    def add_schema(self, schema: Any, name: str, *, param: str) -> str:
        """Rules for values valid against `schema`; returns the name of its top rule.

        Raises UnsupportedFeature (with `param`) naming the first keyword that cannot be honoured.
        """
        if not isinstance(schema, dict):
            raise UnsupportedFeature(f"{param}: a JSON schema must be an object", param=param)
        prepared = _namespaced(copy.deepcopy(schema), name)
        check_schema(prepared, param=param)
        conv = self._conv
        try:
            resolved = conv.resolve_refs(prepared, name)
            rule = str(conv.visit(resolved, name))
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise UnsupportedFeature(
                f"{param}: the schema cannot be turned into a grammar ({exc})", param=param
            ) from None
        return rule

    def add_rule(self, name: str, body: str) -> str:
        """A hand-written rule `name ::= body`."""
        self._extra[name] = body
        return name

    def build(self, root: str) -> str:
        """The grammar text with `root ::= <root>` as its start rule."""
        rules = dict(self._conv._rules)
        if "char" in rules:
            rules["char"] = _SAFE_CHAR
        if "dot" in rules:
            rules["dot"] = _SAFE_DOT
        rules.update(self._extra)
        rules["root"] = root
        return "\n".join(f"{name} ::= {body}" for name, body in sorted(rules.items())) + "\n"


def json_grammar() -> str:
    """Any JSON object (OpenAI's `json_object` mode), with at most one space between tokens."""
    builder = GrammarBuilder()
    return builder.build(builder.add_schema({"type": "object"}, "json", param="response_format"))


def schema_grammar(schema: dict[str, Any], *, param: str = "response_format") -> str:
    """A grammar whose sentences are JSON documents valid against `schema`.

    Raises UnsupportedFeature naming the schema keyword the converter cannot express.
    """
    builder = GrammarBuilder()
    return builder.build(builder.add_schema(schema, "schema", param=param))


def _namespaced(schema: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Rename local definitions to `<prefix>-<name>` so schemas sharing one grammar never clash
    (the converter names a $ref's rule after the definition's last path part)."""
    renames: dict[str, str] = {}
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if isinstance(defs, dict):
            schema[key] = {f"{prefix}-{name}": body for name, body in defs.items()}
            renames.update({f"#/{key}/{name}": f"#/{key}/{prefix}-{name}" for name in defs})

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref in renames:
                node["$ref"] = renames[ref]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema
