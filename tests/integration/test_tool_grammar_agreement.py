"""The tool-call grammar and the parser agree: what llama.cpp's grammar engine accepts, the
parser reads as calls and nothing else; what it refuses, the model can never write.

Strings are fed token by token (the default model's vocabulary) through the real grammar
sampler; no generation is involved.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from server.chat.template import ChatTemplate
from server.chat.tools import Tool, ToolChoice, ToolPlan, plan_tools

WEATHER = Tool(
    "get_weather",
    None,
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
OPEN = '<tool_call>\n{"name": "get_weather", "arguments": '
PARIS = OPEN + '{"city": "Paris"}}\n</tool_call>'
PARIS_BLANK = OPEN + '{ "city": "Paris" } }\n</tool_call>'  # what the model wrote
ROME = OPEN + '{"city": "Rome"}}\n</tool_call>'


@pytest.fixture(scope="module")
def vocab(default_model_path: Path) -> Iterator[Any]:
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(default_model_path).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def accepted(vocab: Any, plan: ToolPlan, text: str) -> bool:
    """Whether the grammar lets `text` be the whole answer (every token allowed, then EOS)."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, plan.grammar.encode(), b"root")
    assert sampler
    try:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), False, False)
        eos = llama_cpp.llama_vocab_eos(vocab)
        for token in [*buf[:n], eos]:
            one = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            array = llama_cpp.llama_token_data_array(one, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if one[0].logit == float("-inf"):
                return False
            if token != eos:
                llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize("max_calls", [1, 2])
def test_grammar_and_parser_agree(vocab: Any, max_calls: int) -> None:
    plan = plan_tools([WEATHER], ToolChoice("required"), ChatTemplate(None), max_calls=max_calls)
    assert plan is not None
    answers = {
        PARIS: True,
        PARIS_BLANK: True,
        PARIS_BLANK.replace("} }", "}  }"): False,  # one blank at most
        PARIS + " ": False,  # nothing after the last call
        "Sure. " + PARIS: False,  # a forced call opens the answer
        PARIS + "\n" + ROME: max_calls >= 2,
        PARIS + "\n" + ROME + "\n" + PARIS: False,  # the cap
    }
    for text, expected in answers.items():
        assert accepted(vocab, plan, text) is expected, text
        if expected:
            content, calls = plan.read(text)
            assert content == "" and calls and all(c.complete for c in calls), text
