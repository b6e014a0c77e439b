"""Every pydantic validation failure reads `field: reason`, whichever part of the server saw it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.api.ollama.options import split_options
from server.engine.options import LoadOptions
from server.errors import InvalidRequest
from server.registry import Registry
from server.scheduler import ModelManager
from server.settings import SettingsError, load_settings
from server.validation import describe, error_parts
from tests.conftest import MakeGGUF


def _errors(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        LoadOptions.model_validate(values)
    return caught.value


def test_describe_names_each_field_and_its_reason() -> None:
    exc = _errors(n_ctx=-1, n_parallel="many")
    assert describe(exc.errors()) == (
        "n_ctx: Input should be greater than or equal to 0; "
        "n_parallel: Input should be a valid integer, unable to parse string as an integer"
    )
    assert describe(exc.errors(), first=True) == "n_ctx: Input should be greater than or equal to 0"
    assert error_parts([{"loc": ("body", "x", 0), "msg": "bad"}], skip=("body",)) == [
        ("x.0", "bad")
    ]
    assert describe([{"loc": (), "msg": "whole thing is wrong"}]) == "whole thing is wrong"


def test_settings_options_and_load_options_share_the_wording(
    tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    with pytest.raises(SettingsError) as setting:
        load_settings(home=tmp_home, port=0)
    assert str(setting.value) == "invalid setting: port: Input should be greater than or equal to 1"

    with pytest.raises(InvalidRequest) as option:
        split_options({"temperature": "hot"})
    assert (
        option.value.message
        == "invalid option temperature: Input should be a valid number"  # strict: no parsing
    )
    assert option.value.param == "options.temperature"

    registry = Registry(load_settings(home=tmp_home))
    registry.import_file(make_gguf("a.gguf"), "alpha:1b")
    resolved = registry.resolve("alpha:1b")
    manager = ModelManager(registry.settings, registry)
    with pytest.raises(InvalidRequest) as load:
        manager.options_for(resolved, {"n_ctx": "big"})
    assert load.value.message == (
        "invalid load options: n_ctx: Input should be a valid integer, unable to parse string "
        "as an integer"
    )
    asyncio.run(manager.close())


def test_union_errors_name_the_field_and_keep_the_closest_reason() -> None:
    from server.api.openai.chat_protocol import ChatCompletionRequest

    parts = [{"type": "text", "text": "x"}] * 300
    with pytest.raises(ValidationError) as exc:
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": parts}]})
    assert error_parts(exc.value.errors()) == [
        ("messages.0.content", "List should have at most 256 items after validation, not 300")
    ]
    with pytest.raises(ValidationError) as exc:
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": 5}]})
    assert {where for where, _ in error_parts(exc.value.errors())} == {"messages.0.content"}
