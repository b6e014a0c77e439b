"""Ollama's Go prompt templates, translated to Jinja."""

from __future__ import annotations

import pytest

from server.chat.gotemplate import GoTemplate, translate
from server.errors import InvalidRequest

MESSAGES = [
    {"Role": "system", "Content": "Be kind."},
    {"Role": "user", "Content": "Hi"},
    {"Role": "assistant", "Content": "Hello!"},
    {"Role": "user", "Content": "Bye"},
]


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("{{ .System }} {{ .Prompt }}", {"System": "S", "Prompt": "P"}, "S P"),
        (
            "{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}",
            {"System": "", "Prompt": "P"},
            "P",
        ),
        (
            "{{ if .System }}[{{ .System }}]{{ else }}none {{ end }}{{ .Prompt }}",
            {"System": "", "Prompt": "P"},
            "none P",
        ),
        ("A\n{{- .Prompt -}}\nB", {"Prompt": "p"}, "ApB"),
        ("{{/* comment */}}x", {}, "x"),
        (
            '{{ if eq .Prompt "a" }}A{{ else if eq .Prompt "b" }}B{{ else }}C{{ end }}',
            {"Prompt": "b"},
            "B",
        ),
        (
            "{{ if and .System (not .Prompt) }}only system{{ end }}",
            {"System": "s", "Prompt": ""},
            "only system",
        ),
        ("{{ len .Messages }}", {"Messages": MESSAGES}, "4"),
        ("{{ json .Tools }}", {"Tools": [{"a": 1}]}, '[{"a": 1}]'),
        ("{% raw %}{{ .Prompt }}", {"Prompt": "x"}, "{% raw %}x"),
    ],
)
def test_translated_templates_render_like_go(
    source: str, values: dict[str, object], expected: str
) -> None:
    assert GoTemplate(source).render(**values) == expected


def test_range_over_messages_with_dot_and_root_access() -> None:
    source = '{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ if eq .Role "user" }} ({{ $.Prompt }}){{ end }}\n{{ end }}'
    out = GoTemplate(source).render(Messages=MESSAGES, Prompt="P")
    assert out == "<|system|>Be kind.\n<|user|>Hi (P)\n<|assistant|>Hello!\n<|user|>Bye (P)\n"


def test_range_with_index_and_item_variables() -> None:
    source = "{{ range $i, $m := .Messages }}{{ $i }}:{{ $m.Role }} {{ end }}"
    assert GoTemplate(source).render(Messages=MESSAGES) == "0:system 1:user 2:assistant 3:user "


@pytest.mark.parametrize(
    "source",
    [
        '{{ template "x" }}',
        "{{ with .System }}{{ . }}{{ end }}",
        "{{ if .System }}",
        "{{ end }}",
        "{{ .Prompt | printf }}",
        "{{ call .F }}",
    ],
)
def test_unsupported_constructs_are_refused_by_name(source: str) -> None:
    with pytest.raises(InvalidRequest):
        translate(source) if "with" in source or "template" in source else GoTemplate(source)


def test_rendering_is_sandboxed() -> None:
    with pytest.raises(InvalidRequest):
        GoTemplate("{{ .Prompt.__class__.__mro__ }}").render(Prompt="x")
