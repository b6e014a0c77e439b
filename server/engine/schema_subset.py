"""The JSON-schema subset that grammar-constrained generation can honour, checked up front.

llama-cpp-python's converter silently drops keywords it cannot express, so a grammar built from
such a schema could produce output that breaks the schema. Every keyword is checked here first;
anything outside the subset is refused with UnsupportedFeature naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.errors import UnsupportedFeature

# Keywords that constrain values but that the converter would ignore: refused.
_UNSUPPORTED = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "if",
        "then",
        "else",
        "not",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
        "$dynamicRef",
        "$recursiveRef",
    }
)
_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid3", "uuid4", "uuid5"})
_CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " "}


def check_schema(schema: Any, *, param: str, where: str = "") -> None:
    """Refuse any keyword the grammar cannot honour; raises UnsupportedFeature naming it."""
    for path, node in _subschemas(schema, where):
        for key, value in node.items():
            if key in _UNSUPPORTED:
                raise UnsupportedFeature(
                    f"{param}: the JSON schema keyword '{key}' (at {path or '/'}) is not supported "
                    "by grammar-constrained generation",
                    param=param,
                )
            if key == "type":
                types = value if isinstance(value, list) else [value]
                bad = [t for t in types if t not in _TYPES]
                if bad:
                    raise UnsupportedFeature(
                        f"{param}: unknown JSON schema type {bad[0]!r} (at {path or '/'})",
                        param=param,
                    )
            elif (
                key == "format" and node.get("type", "string") == "string" and value not in _FORMATS
            ):
                raise UnsupportedFeature(
                    f"{param}: the string format '{value}' (at {path or '/'}) is not supported; "
                    f"supported: {', '.join(sorted(_FORMATS))}",
                    param=param,
                )
            elif key == "pattern":
                node["pattern"] = _safe_pattern(str(value), param=param)
            elif key == "$ref" and not str(value).startswith("#/"):
                raise UnsupportedFeature(
                    f"{param}: only local $ref ('#/...') is supported, not {value!r}", param=param
                )
        required = node.get("required")
        if required and isinstance(required, list) and "allOf" not in node:
            known = node.get("properties") or {}
            missing = [r for r in required if r not in known]
            if missing:
                raise UnsupportedFeature(
                    f"{param}: 'required' names '{missing[0]}' (at {path or '/'}), which is not in "
                    "'properties'",
                    param=param,
                )


def _subschemas(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in ("properties", "$defs", "definitions"):
        children = schema.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _subschemas(child, f"{path}/{key}/{name}")
    for key in ("items", "additionalProperties"):
        child = schema.get(key)
        if isinstance(child, dict):
            yield from _subschemas(child, f"{path}/{key}")
        elif isinstance(child, list):
            for i, item in enumerate(child):
                yield from _subschemas(item, f"{path}/{key}/{i}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        children = schema.get(key)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from _subschemas(child, f"{path}/{key}/{i}")


def _safe_pattern(pattern: str, *, param: str) -> str:
    """Anchor `pattern` and translate the regex subset the converter handles, or refuse it.

    Quotes, backslashes and control characters would break the JSON string the pattern sits
    in, and negated classes or lookarounds could admit them, so those are refused.
    """

    def refuse(what: str) -> UnsupportedFeature:
        return UnsupportedFeature(
            f"{param}: the regex pattern {pattern!r} uses {what}, which is not supported",
            param=param,
        )

    body = pattern[1:] if pattern.startswith("^") else pattern
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                raise refuse("a trailing backslash")
            e = body[i + 1]
            if e in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[e] if in_class else f"[{_CLASS_ESCAPES[e]}]")
            elif e.isalnum() or e in '\\"':
                raise refuse(f"the escape \\{e}")
            else:
                out.append("\\" + e)
            i += 2
            continue
        if c == '"' or ord(c) < 0x20:
            raise refuse("a quote or control character")
        if c == "[":
            if in_class:
                raise refuse("a nested character class")
            if body[i + 1 : i + 2] == "^":
                raise refuse("a negated character class")
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "(" and body[i + 1 : i + 2] == "?" and not in_class:
            raise refuse("a (?...) group")
        elif c in "^$" and not in_class:
            raise refuse("an anchor inside the pattern")
        out.append(c)
        i += 1
    return "^" + "".join(out) + "$"
