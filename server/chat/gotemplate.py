"""Ollama's Go text/template prompt templates, translated to Jinja and rendered in the sandbox.

Ollama templates (a Modelfile TEMPLATE, or `template` in /api/generate) use a small part of Go's
text/template: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, `{{ if }}/{{ else if }}/
{{ else }}/{{ end }}`, `{{ range .Messages }}` (optionally `range $i, $m := ...`), the functions
`eq ne and or not len json`, comments and the `{{-`/`-}}` trim markers. That subset translates
to Jinja one action at a time; anything else is refused with a message naming it.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2

from server.chat.sandbox import (
    BudgetedSandbox,
    RenderLimits,
    TemplateLimitExceeded,
    compile_budgeted,
    render_budgeted,
)
from server.errors import InvalidRequest, ModelTemplateError

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|`[^`]*`|\(|\)|[^\s()]+')
_GO_SPACE = " \t\r\n"  # what Go's trim markers remove
_FUNCS = {"eq", "ne", "and", "or", "not", "len", "json", "lt", "gt", "le", "ge"}


class _Translator:
    def __init__(self) -> None:
        self.dots: list[str] = [""]  # what `.` means: "" for the root, else a loop variable
        self.blocks: list[str] = []
        self.loop_n = 0

    def field(self, token: str) -> str:
        if token == ".":
            return self.dots[-1] or "_root"
        if token.startswith("$."):
            return token[2:]
        if token.startswith("$"):
            return token[1:] or "_root"
        path = token[1:]
        base = self.dots[-1]
        return f"{base}.{path}" if base else path

    def operand(self, tokens: list[str], i: int) -> tuple[str, int]:
        tok = tokens[i]
        if tok == "(":
            inner, j = self.expr(tokens, i + 1)
            if j >= len(tokens) or tokens[j] != ")":
                raise InvalidRequest("unbalanced parentheses in template", param="template")
            return f"({inner})", j + 1
        if tok.startswith('"'):
            return tok, i + 1
        if tok.startswith("`"):
            return repr(tok[1:-1]), i + 1
        if tok.startswith(".") or tok.startswith("$"):
            return self.field(tok), i + 1
        if re.fullmatch(r"-?\d+(\.\d+)?|true|false", tok):
            return tok.replace("true", "True").replace("false", "False"), i + 1
        if tok in _FUNCS:
            return self.call(tokens, i)
        raise InvalidRequest(f"unsupported template construct: {tok!r}", param="template")

    def call(self, tokens: list[str], i: int) -> tuple[str, int]:
        func = tokens[i]
        args: list[str] = []
        j = i + 1
        while j < len(tokens) and tokens[j] != ")":
            arg, j = self.operand(tokens, j)
            args.append(arg)
        ops = {"eq": "==", "ne": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}
        if func in ops and len(args) == 2:
            return f"({args[0]} {ops[func]} {args[1]})", j
        if func == "eq" and len(args) > 2:
            return "(" + " or ".join(f"{args[0]} == {a}" for a in args[1:]) + ")", j
        if func in ("and", "or") and len(args) >= 2:
            return "(" + f" {func} ".join(args) + ")", j
        if func == "not" and len(args) == 1:
            return f"(not {args[0]})", j
        if func == "len" and len(args) == 1:
            return f"({args[0]} | length)", j
        if func == "json" and len(args) == 1:
            return f"({args[0]} | tojson)", j
        raise InvalidRequest(f"unsupported use of {func!r} in template", param="template")

    def expr(self, tokens: list[str], i: int) -> tuple[str, int]:
        if i < len(tokens) and tokens[i] in _FUNCS:
            return self.call(tokens, i)
        return self.operand(tokens, i)

    def pipeline(self, text: str) -> str:
        tokens = _TOKEN.findall(text)
        if "|" in tokens:
            raise InvalidRequest("template pipelines ('|') are not supported", param="template")
        out, end = self.expr(tokens, 0)
        if end != len(tokens):
            raise InvalidRequest(f"unsupported template action: {{{{ {text} }}}}", param="template")
        return out

    def action(self, body: str) -> str:
        if body.startswith("/*"):
            return ""
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word) :].strip()
        if word == "if":
            self.blocks.append("if")
            return f"{{% if {self.pipeline(rest)} %}}"
        if word == "else":
            if rest.startswith("if "):
                return f"{{% elif {self.pipeline(rest[3:])} %}}"
            return "{% else %}"
        if word == "end":
            if not self.blocks:
                raise InvalidRequest("unexpected {{ end }} in template", param="template")
            kind = self.blocks.pop()
            if kind == "range":
                self.dots.pop()
                return "{% endfor %}"
            return "{% endif %}"
        if word == "range":
            match = re.fullmatch(r"\$(\w+)\s*,\s*\$(\w+)\s*:=\s*(.+)", rest)
            self.loop_n += 1
            if match:
                index, item, source = match.groups()
                seq = self.pipeline(source)
                self.dots.append(item)
                self.blocks.append("range")
                return f"{{% for {index}, {item} in ({seq} or []) | list | enumerate %}}"
            seq = self.pipeline(rest)
            item = f"_it{self.loop_n}"
            self.dots.append(item)
            self.blocks.append("range")
            return f"{{% for {item} in ({seq} or []) %}}"
        if word in ("with", "define", "template", "block"):
            raise InvalidRequest(f"'{word}' is not supported in templates", param="template")
        return f"{{{{ {self.pipeline(body)} }}}}"


def translate(source: str) -> tuple[str, tuple[str, ...]]:
    """Jinja source for a Go-template prompt template, and the literal texts it prints.

    Text between actions never becomes Jinja source: each piece is printed from the `_lit`
    tuple, so `{%`, `{#` or a stray `{{` in it stays literal wherever it stands. Go's trim
    markers (`{{-`, `-}}`) are applied here, to that text. Raises InvalidRequest when the
    template uses something unsupported.
    """
    tr = _Translator()
    parts: list[str] = []
    literals: list[str] = []

    def literal(text: str) -> None:
        if text:
            parts.append(f"{{{{ _lit[{len(literals)}] }}}}")
            literals.append(text)

    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip(_GO_SPACE)
        if match.group(1):
            text = text.rstrip(_GO_SPACE)
        literal(text)
        parts.append(tr.action(match.group(2)))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    literal(tail.lstrip(_GO_SPACE) if trim_next else tail)
    if tr.blocks:
        raise InvalidRequest("template has an unclosed {{ if }} or {{ range }}", param="template")
    return "".join(parts), tuple(literals)


def _enumerate(seq: Any) -> Any:
    return enumerate(seq)


class GoTemplate:
    """A compiled Ollama template; render(System=..., Prompt=..., Messages=[...], ...).

    `from_request`: the template came in a request (`template` on /api/generate), so its
    failures are the client's (400); otherwise it is the model's (Modelfile TEMPLATE) and one
    that runs past its budget is a model error.
    """

    def __init__(
        self, source: str, *, limits: RenderLimits | None = None, from_request: bool = False
    ) -> None:
        self.source = source
        self.limits = limits or RenderLimits()
        self.from_request = from_request
        env = BudgetedSandbox(keep_trailing_newline=True)
        env.filters["enumerate"] = _enumerate
        jinja_source, literals = translate(source)
        try:
            self._template = compile_budgeted(env, jinja_source, self.limits, {"_lit": literals})
        except (jinja2.TemplateSyntaxError, TemplateLimitExceeded) as exc:
            raise InvalidRequest(f"the template does not parse: {exc}", param="template") from None
        self.uses_messages = ".Messages" in source

    def render(self, **values: Any) -> str:
        """The prompt. Blocks for up to `limits.seconds`: call it off the event loop.

        Raises InvalidRequest when rendering fails (e.g. a field of the wrong type, or a request
        template past its budget), ModelTemplateError when the model's template passes it.
        """
        try:
            return render_budgeted(self._template, self.limits, {"_root": values, **values})
        except TemplateLimitExceeded as exc:
            if self.from_request:
                raise InvalidRequest(f"the template failed: {exc}", param="template") from None
            raise ModelTemplateError(f"the model's template failed: {exc}") from None
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the template failed: {exc}", param="template") from None
