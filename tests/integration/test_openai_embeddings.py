"""/v1/embeddings on the chat-loaded default model (its second context), through the SDK."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import DEFAULT_MODEL, RunningServer

N_EMBD = 576  # SmolLM2-135M's embedding length
SENTENCES = [
    "The cat sits on the mat.",
    "A cat is sitting on a mat.",
    "Quantum chromodynamics describes the strong interaction.",
]


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def vocab(default_model_path: Path) -> Any:
    import llama_cpp

    return llama_cpp.Llama(str(default_model_path), vocab_only=True, verbose=False)


def vectors(client: OpenAI, inputs: Any, **kw: Any) -> np.ndarray[Any, Any]:
    r = client.embeddings.create(model=DEFAULT_MODEL, input=inputs, **kw)
    assert [d.index for d in r.data] == list(range(len(r.data)))
    return np.array([d.embedding for d in r.data], dtype=np.float64)


def test_string_input_gives_one_normalised_vector_and_usage(client: OpenAI) -> None:
    r = client.embeddings.create(model=DEFAULT_MODEL, input="hello world", encoding_format="float")
    assert r.object == "list" and r.model == DEFAULT_MODEL and len(r.data) == 1
    v = np.array(r.data[0].embedding)
    assert v.shape == (N_EMBD,) and abs(np.linalg.norm(v) - 1.0) < 1e-4
    assert r.usage.prompt_tokens == r.usage.total_tokens == 2


def test_list_of_strings_and_similarity(client: OpenAI) -> None:
    v = vectors(client, SENTENCES, encoding_format="float")
    assert v.shape == (3, N_EMBD)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # paraphrases are closer


def test_batched_equals_alone(client: OpenAI) -> None:
    together = vectors(client, SENTENCES, encoding_format="float")
    alone = vectors(client, SENTENCES[2], encoding_format="float")[0]
    assert np.allclose(together[2], alone, atol=1e-4)


def test_sdk_default_base64_equals_float(client: OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    assert np.allclose(
        vectors(client, SENTENCES), vectors(client, SENTENCES, encoding_format="float"), atol=1e-6
    )


def test_raw_base64_is_little_endian_float32(server: RunningServer) -> None:
    body = {"model": DEFAULT_MODEL, "input": "hi", "encoding_format": "base64"}
    data = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json()["data"][0]
    decoded = np.frombuffer(base64.b64decode(data["embedding"]), dtype="<f4")
    floats = httpx.post(
        f"{server.url}/v1/embeddings", json={**body, "encoding_format": "float"}, timeout=60
    ).json()["data"][0]["embedding"]
    assert decoded.shape == (N_EMBD,) and np.allclose(decoded, floats, atol=1e-6)


def test_token_array_inputs(client: OpenAI, vocab: Any) -> None:
    ids = [vocab.tokenize(s.encode(), add_bos=False, special=False) for s in SENTENCES[:2]]
    by_text = vectors(client, SENTENCES[:2], encoding_format="float")
    assert np.allclose(vectors(client, ids, encoding_format="float"), by_text, atol=1e-5)
    assert np.allclose(vectors(client, ids[0], encoding_format="float")[0], by_text[0], atol=1e-5)


def test_dimensions_equal_to_the_model_are_accepted(client: OpenAI) -> None:
    assert vectors(client, "x", dimensions=N_EMBD).shape == (1, N_EMBD)


@pytest.mark.parametrize(
    ("kw", "param", "code"),
    [
        ({"input": "x", "dimensions": 64}, "dimensions", "unsupported_parameter"),
        ({"input": ""}, "input", None),
        ({"input": [[999999]]}, "input", None),
        ({"input": "word " * 3000}, "input", "context_length_exceeded"),
    ],
)
def test_bad_inputs_are_400(
    client: OpenAI, kw: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=DEFAULT_MODEL, encoding_format="float", **kw)
    assert info.value.param == param  # type: ignore[attr-defined]
    if code:
        assert info.value.code == code
    assert vectors(client, "still serving").shape == (1, N_EMBD)


def test_embeddings_while_chat_streams(base_url: str) -> None:
    """The chat context keeps generating while the embedding context works between its steps."""

    async def main() -> tuple[str, list[int]]:
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
        try:

            async def chat() -> str:
                out = []
                stream = await client.chat.completions.create(
                    model=DEFAULT_MODEL,
                    messages=[{"role": "user", "content": "Write a short story about a fox."}],
                    stream=True,
                    max_tokens=48,
                    temperature=0,
                )
                async for chunk in stream:
                    out += [c.delta.content or "" for c in chunk.choices]
                return "".join(out)

            async def embed() -> list[int]:
                sizes = []
                for i in range(4):
                    r = await client.embeddings.create(
                        model=DEFAULT_MODEL, input=[f"sentence {i}"] * 3, encoding_format="float"
                    )
                    sizes += [len(d.embedding) for d in r.data]
                return sizes

            text, sizes = await asyncio.gather(chat(), embed())
            return text, sizes
        finally:
            await client.close()

    text, sizes = asyncio.run(main())
    assert len(text.split()) >= 5
    assert sizes == [N_EMBD] * 12
