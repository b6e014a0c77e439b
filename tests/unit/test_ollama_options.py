"""Ollama options and request fields: null means unset (as Ollama's Go decoder reads it)."""

from __future__ import annotations

import pytest

from server.api.ollama.options import OLLAMA_DEFAULTS, split_options
from server.api.ollama.protocol import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest
from server.errors import InvalidRequest

# What langchain-ollama's OllamaEmbeddings sends for options it does not set.
LANGCHAIN_NULLS = {
    "mirostat": None,
    "mirostat_eta": None,
    "mirostat_tau": None,
    "num_ctx": None,
    "num_gpu": None,
    "num_thread": None,
    "repeat_last_n": None,
    "repeat_penalty": None,
    "temperature": None,
    "stop": None,
    "tfs_z": None,
    "top_k": None,
    "top_p": None,
}


def test_null_options_are_unset() -> None:
    split = split_options(LANGCHAIN_NULLS)
    assert split.load == {}
    runtime = split.runtime.model_dump()
    assert {k: runtime[k] for k in OLLAMA_DEFAULTS} == OLLAMA_DEFAULTS
    assert split.runtime.stop == [] and split.runtime.mirostat == 0


def test_a_null_option_keeps_the_models_own_parameter() -> None:
    split = split_options({"temperature": None, "num_ctx": None}, {"temperature": 0.2})
    assert split.runtime.temperature == 0.2 and split.load == {}
    assert split_options({"num_ctx": 1024, "top_k": None}).load == {"n_ctx": 1024}


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": "hot"}, "options.temperature"),
        ({"top_k": [1]}, "options.top_k"),
        ({"stop": 3, "temperature": None}, "options.stop"),
    ],
)
def test_wrong_types_are_still_refused(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        split_options(options)
    assert caught.value.param == param


def test_null_request_fields_take_their_defaults() -> None:
    chat = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": None, "images": None}],
            "stream": None,
            "format": None,
            "keep_alive": None,
            "tools": None,
            "think": None,
            "options": None,
        }
    )
    assert chat.stream is True and chat.messages is not None and chat.messages[0].content == ""
    generate = GenerateRequest.model_validate(
        {"model": "m", "prompt": "hi", "raw": None, "system": None, "stream": None}
    )
    assert generate.raw is False and generate.stream is True
    embed = EmbedRequest.model_validate({"model": "m", "input": "x", "truncate": None})
    assert embed.truncate is True
    assert EmbeddingsRequest.model_validate({"model": "m", "prompt": None}).prompt == ""
