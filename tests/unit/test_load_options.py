"""Load-option validation before anything reaches llama.cpp."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from server.engine.loader import GGML_TYPES, ModelFacts, cache_type_id, resolve_options
from server.engine.options import CACHE_TYPES, LoadOptions
from server.errors import InvalidLoadOptions

FACTS = ModelFacts(n_ctx_train=8192, n_layer=30)


def resolve(**kw: object) -> LoadOptions:
    return resolve_options(LoadOptions.model_validate(kw), FACTS, n_ctx_cap=4096)


def test_quantized_v_cache_needs_flash_attention() -> None:
    with pytest.raises(InvalidLoadOptions, match="flash_attn") as info:
        resolve(type_v="q8_0", flash_attn="off")
    assert info.value.param == "type_v"
    assert resolve(type_v="q4_0", flash_attn="auto").flash_attn == "on"  # auto resolves to on
    assert resolve(type_k="q8_0", flash_attn="off").flash_attn == "off"  # quantized K alone is fine


def test_unknown_cache_type_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as info:
        LoadOptions(type_k="q3_k")  # type: ignore[arg-type]
    assert all(t in str(info.value) for t in CACHE_TYPES)
    with pytest.raises(InvalidLoadOptions, match="q8_0, q4_0"):
        cache_type_id("q3_k")
    assert set(GGML_TYPES) == set(CACHE_TYPES)


def test_n_ctx_zero_means_trained_length_capped() -> None:
    assert resolve(n_ctx=0).n_ctx == 4096  # trained 8192, capped at 4096
    assert resolve_options(LoadOptions(n_ctx=0), ModelFacts(2048, 30), n_ctx_cap=4096).n_ctx == 2048


def test_n_ctx_above_trained_length_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidLoadOptions, match="at most 8192"):
        resolve(n_ctx=10000)


def test_gpu_layers_above_layer_count_means_all() -> None:
    assert resolve(n_gpu_layers=999).n_gpu_layers == -1
    assert resolve(n_gpu_layers=12).n_gpu_layers == 12
    assert resolve(n_gpu_layers=-1).n_gpu_layers == -1


def test_gpu_layers_default_to_auto_which_the_plan_resolves() -> None:
    assert LoadOptions().n_gpu_layers == "auto"
    assert resolve().n_gpu_layers == "auto"  # validation leaves it to the memory plan
    assert LoadOptions.model_validate({"n_gpu_layers": "auto"}).n_gpu_layers == "auto"
    with pytest.raises(ValidationError):
        LoadOptions.model_validate({"n_gpu_layers": "most"})


def test_ollama_num_gpu_minus_one_means_auto() -> None:
    from server.api.ollama.options import split_options

    assert split_options({"num_gpu": -1}).load == {"n_gpu_layers": "auto"}
    assert split_options({"num_gpu": 12}).load == {"n_gpu_layers": 12}


def test_threads_zero_means_all_cores_and_ubatch_fits_batch() -> None:
    assert resolve(n_threads=0).n_threads == (os.cpu_count() or 1)
    assert resolve(n_batch=128, n_ubatch=512).n_ubatch == 128


@pytest.mark.parametrize(
    "bad",
    [{"n_gpu_layers": -2}, {"n_parallel": 0}, {"flash_attn": "yes"}, {"n_batch": 0}, {"x": 1}],
)
def test_out_of_range_or_unknown_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LoadOptions.model_validate(bad)
