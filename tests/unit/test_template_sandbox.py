"""Chat templates run inside a time and size budget; Go template text stays literal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.chat.gotemplate import GoTemplate
from server.chat.sandbox import RenderLimits
from server.chat.template import ChatTemplate
from server.errors import InvalidRequest, ModelTemplateError
from server.registry import Registry
from server.settings import load_settings
from tests.conftest import MakeGGUF
from tests.fakes import FakeEngine

LIMITS = RenderLimits(seconds=0.5, max_chars=100_000)
MESSAGES = [{"role": "user", "content": "Hi"}]

LOOPING = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% for m in messages %}{% for i in range(99999) %}{% for j in range(99999) %}"
    "{% if m.role == 'x' %}{% endif %}{% endfor %}{% endfor %}{% endfor %}",
    "{% set xs = [0] * 1000 %}{% for a in xs %}{% for b in xs %}{% for c in xs %}"
    "{% endfor %}{% endfor %}{% endfor %}",
]
EXPLODING = [
    "{{ 'x' * 1000000000 }}",
    "{{ [1] * 1000000000 }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 7 ** 999999999 }}",
    "{{ '%0999999999d' % 1 }}",
    "{% for i in range(100000) %}{{ 'abcdefghij' }}{% endfor %}{{ messages[0].content }}",
]


@pytest.mark.parametrize("source", LOOPING + EXPLODING)
def test_a_runaway_model_template_is_a_model_error_within_its_budget(source: str) -> None:
    template = ChatTemplate(source, limits=LIMITS)
    started = time.monotonic()
    with pytest.raises(ModelTemplateError) as caught:
        template.render(MESSAGES)
    assert time.monotonic() - started < LIMITS.seconds + 1.0
    assert caught.value.type == "model_error"
    assert "chat template" in caught.value.message


def test_ordinary_templates_render_unchanged_under_the_budget() -> None:
    template = ChatTemplate(None, limits=LIMITS)
    text = template.render([{"role": "user", "content": "Hello"}] * 50)
    assert text.count("<|im_start|>user\nHello<|im_end|>") == 50
    assert text.endswith("<|im_start|>assistant\n")
    # Loops, filters and string building inside the budget still work.
    source = (
        "{% for m in messages %}{{ (m.role | upper) ~ ':' ~ m.content.ljust(6, '.') }}"
        "{% for i in range(3) %}{{ i }}{% endfor %};{% endfor %}{{ '%05d' % 42 }}"
    )
    out = ChatTemplate(source, limits=LIMITS).render(MESSAGES * 2)
    assert out == "USER:Hi....012;USER:Hi....012;00042"


def test_a_template_raising_on_bad_messages_is_still_the_clients_error() -> None:
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}", limits=LIMITS)
    with pytest.raises(InvalidRequest) as caught:
        template.render(MESSAGES)
    assert "roles must alternate" in caught.value.message


def test_a_runaway_request_go_template_is_a_400_on_template() -> None:
    nested = "{{ range $.Messages }}" * 12 + "{{ end }}" * 12  # 10**12 empty steps
    messages = [{"Role": "user", "Content": str(i)} for i in range(10)]
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as caught:
        GoTemplate(nested, limits=LIMITS, from_request=True).render(Messages=messages)
    assert time.monotonic() - started < LIMITS.seconds + 1.0
    assert caught.value.param == "template"
    with pytest.raises(ModelTemplateError):
        GoTemplate(nested, limits=LIMITS).render(Messages=messages)  # a Modelfile's own
    with pytest.raises(InvalidRequest, match="nests too deep"):
        GoTemplate("{{ range .Messages }}" * 25 + "{{ end }}" * 25, from_request=True)
    big = "{{ .Prompt }}" * 1000
    with pytest.raises(InvalidRequest, match="output passed"):
        GoTemplate(big, limits=LIMITS, from_request=True).render(Prompt="p" * 1000)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ .Prompt }} {% if x %}y{% endif %} {# c #}", "P {% if x %}y{% endif %} {# c #}"),
        ("{{ .Prompt }}\n{%- raw %}{{", "P\n{%- raw %}{{"),
        ("{% set a = 1 %}{{ .Prompt }}{#", "{% set a = 1 %}P{#"),
        ("{{ if .Prompt }}{{ .Prompt }}{{ end }}}}{%endif%}", "P}}{%endif%}"),
        ("a {{- .Prompt -}} \n {%", "aP{%"),
        ("{{ .Prompt }}{{ '{{' }}", None),  # a quoted action is still an action: refused
    ],
)
def test_text_around_go_actions_is_literal(source: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidRequest):
            GoTemplate(source, from_request=True).render(Prompt="P")
        return
    assert GoTemplate(source, from_request=True).render(Prompt="P") == expected


def test_a_runaway_model_template_is_a_422_model_error_on_both_apis(
    tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    settings = load_settings(home=tmp_home, default_model="fake:1b")
    registry = Registry(settings)
    registry.import_file(make_gguf(context_length=32768), "fake:1b")
    engine = FakeEngine()

    def factory(resolved: object, options: object) -> tuple[FakeEngine, ChatTemplate]:
        return engine, ChatTemplate(LOOPING[0], limits=LIMITS)

    app = create_app(settings, registry=registry, engine_factory=factory)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost") as client:
        messages = [{"role": "user", "content": "Hi"}]
        r = client.post("/v1/chat/completions", json={"model": "fake:1b", "messages": messages})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["type"] == "model_error" and error["code"] == "template_failed"
        assert "longer than 0.5 seconds" in error["message"]
        r = client.post("/api/chat", json={"model": "fake:1b", "messages": messages})
        assert r.status_code == 422 and "chat template" in r.json()["error"]
        assert client.get("/health").status_code == 200
