"""The memory plan from headers alone, against hand arithmetic (no llama.cpp here).

Synthetic GGUFs (tests/synthetic_gguf.py): a GQA llama, a gemma3-style sliding-window model and
a mixture of experts. Every expected number below is worked out by hand from the shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engine.memory import Device, Margins, plan_memory
from server.engine.options import LoadOptions
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from tests.synthetic_gguf import Q, Shape, write_model

MiB = 1 << 20
GiB = 1 << 30
HOST = [Device("CPU", "cpu", 64 * GiB, 64 * GiB)]


def q8(n: int) -> int:
    """Bytes of n Q8_0 elements: blocks of 32 take 34 bytes."""
    return n // 32 * 34


def info_of(tmp_path: Path, shape: Shape, name: str = "m.gguf") -> GGUFInfo:
    return read_gguf_info(write_model(tmp_path / name, shape))


def opts(**kw: object) -> LoadOptions:
    base: dict[str, object] = {"n_gpu_layers": 0, "n_threads": 1}
    return LoadOptions.model_validate({**base, **kw})


GQA = Shape(n_layer=8, n_embd=512, n_head=8, n_head_kv=2, n_ff=1024, n_vocab=1000)


def test_gqa_llama_weights_per_layer_and_outside_the_layers(tmp_path: Path) -> None:
    info = info_of(tmp_path, GQA)
    e, f, kv = 512, 1024, 2 * 64
    per_layer = 4 * e + q8(e * e) + 2 * q8(e * kv) + q8(e * e) + 4 * e + 3 * q8(e * f)
    assert info.tensor_sizes.layers == [per_layer] * 8
    assert info.tensor_sizes.other == {
        "token_embd.weight": q8(e * 1000),
        "output_norm.weight": 4 * e,
        "output.weight": q8(e * 1000),
    }
    plan = plan_memory(info, opts(n_ctx=1024, n_parallel=1), HOST, find_max_ctx=False)
    assert plan.weights == 8 * per_layer + 2 * q8(e * 1000) + 4 * e == info.tensor_bytes


@pytest.mark.parametrize(
    ("type_kv", "row"),
    [("f16", 2 * 128), ("q8_0", 128 // 32 * 34), ("q4_0", 128 // 32 * 18)],
)
def test_gqa_llama_kv_cache_by_cache_type(tmp_path: Path, type_kv: str, row: int) -> None:
    """n_layer x cells x slots x (n_head_kv x head_dim) per K and per V row."""
    info = info_of(tmp_path, GQA)
    o = opts(n_ctx=4096, n_parallel=3, type_k=type_kv, type_v=type_kv)
    plan = plan_memory(info, o, HOST, find_max_ctx=False)
    assert plan.kv.cells == 4096 and plan.kv.sequences == 3 and plan.kv.layers == 8
    assert plan.kv.k_bytes == plan.kv.v_bytes == 8 * 4096 * 3 * row
    assert plan.kv.total == 2 * 8 * 4096 * 3 * row
    assert plan.kv.cells_swa is None


def test_context_is_padded_to_256_cells_as_llama_cpp_does(tmp_path: Path) -> None:
    info = info_of(tmp_path, GQA)
    plan = plan_memory(info, opts(n_ctx=1000, n_parallel=1), HOST, find_max_ctx=False)
    assert plan.n_ctx == 1024
    assert plan.kv.total == 2 * 8 * 1024 * 256


def test_per_layer_kv_head_counts(tmp_path: Path) -> None:
    """head_count_kv as an array: each layer's cache has its own width."""
    heads = [1, 2, 4, 8, 1, 2, 4, 8]
    info = info_of(tmp_path, Shape(n_layer=8, n_embd=512, n_head=8, n_head_kv=heads))
    plan = plan_memory(info, opts(n_ctx=2048, n_parallel=1), HOST, find_max_ctx=False)
    assert plan.kv.k_bytes == sum(2048 * h * 64 * 2 for h in heads)


GEMMA = Shape(
    arch="gemma3",
    n_layer=12,
    n_embd=256,
    n_head=4,
    n_head_kv=1,
    head_dim=128,
    n_ff=1024,
    tied=True,
    sliding_window=512,
)


def test_gemma_sliding_window_layers_keep_only_the_window(tmp_path: Path) -> None:
    """gemma3: every 6th layer is global; the other 10 keep window + n_ubatch cells (padded)."""
    info = info_of(tmp_path, GEMMA)
    row = 128 * 2  # one KV head of 128, f16
    small = plan_memory(
        info, opts(n_ctx=8192, n_parallel=2, n_ubatch=512, swa_full=False), HOST, find_max_ctx=False
    )
    assert small.kv.layers == 12 and small.kv.layers_swa == 10
    assert small.kv.cells_swa == 1024  # 512 window + 512 batch, a multiple of 256 already
    assert small.kv.k_bytes == (2 * 8192 + 10 * 1024) * 2 * row
    full = plan_memory(
        info, opts(n_ctx=8192, n_parallel=2, swa_full=True), HOST, find_max_ctx=False
    )
    assert full.kv.cells_swa == 8192
    assert full.kv.k_bytes == 12 * 8192 * 2 * row


def test_gemma_window_pattern_from_the_header_wins(tmp_path: Path) -> None:
    flags = [True, False] * 6
    info = info_of(tmp_path, Shape(**{**GEMMA.__dict__, "swa_pattern": flags}))
    plan = plan_memory(
        info, opts(n_ctx=4096, n_parallel=1, n_ubatch=256, swa_full=False), HOST, find_max_ctx=False
    )
    assert plan.kv.layers_swa == 6
    assert plan.kv.cells_swa == 768  # 512 + 256
    assert plan.kv.k_bytes == (6 * 4096 + 6 * 768) * 256


def test_gemma_tied_embedding_is_not_counted_twice_on_the_host(tmp_path: Path) -> None:
    info = info_of(tmp_path, GEMMA)
    assert "output.weight" not in info.tensor_sizes.other
    plan = plan_memory(info, opts(n_ctx=1024, n_parallel=1), HOST, find_max_ctx=False)
    assert plan.weights == info.tensor_bytes


MOE = Shape(n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=512, n_expert=8, n_expert_used=2)


def test_moe_weights_count_every_expert_and_kv_is_the_attention_only(tmp_path: Path) -> None:
    info = info_of(tmp_path, MOE)
    e, f, n = 256, 512, 8
    experts = 3 * q8(e * f * n)
    assert info.tensor_sizes.experts == [experts] * 4
    attn = 4 * e + q8(e * e) + 2 * q8(e * 64) + q8(e * e)
    assert info.tensor_sizes.layers == [attn + 4 * e + 4 * e * n + experts] * 4
    plan = plan_memory(info, opts(n_ctx=2048, n_parallel=1), HOST, find_max_ctx=False)
    assert plan.kv.total == 2 * 4 * 2048 * 64 * 2
    assert plan.weights == info.tensor_bytes


def test_quantized_v_turns_flash_attention_on_and_shrinks_compute(tmp_path: Path) -> None:
    info = info_of(tmp_path, GQA)
    off = plan_memory(info, opts(n_ctx=8192, flash_attn="off"), HOST, find_max_ctx=False)
    on = plan_memory(info, opts(n_ctx=8192, type_v="q8_0"), HOST, find_max_ctx=False)
    assert not off.flash_attn and on.flash_attn
    # without flash attention the scores (n_kv x n_ubatch x n_head f32) are materialised
    assert off.compute >= 8192 * 512 * 8 * 4 > on.compute


def test_largest_context_that_fits_the_host(tmp_path: Path) -> None:
    info = info_of(tmp_path, GQA)
    budget = [Device("CPU", "cpu", 512 * MiB, 1 * GiB)]
    margins = Margins(host=0)
    plan = plan_memory(info, opts(n_ctx=1024, n_parallel=2), budget, margins=margins)
    assert plan.fits and plan.max_ctx is not None and 1024 < plan.max_ctx <= 8192
    at = plan_memory(info, opts(n_ctx=plan.max_ctx, n_parallel=2), budget, margins=margins)
    assert at.fits
    if plan.max_ctx < 8192:
        over = plan_memory(
            info, opts(n_ctx=plan.max_ctx + 256, n_parallel=2), budget, margins=margins
        )
        assert not over.fits
    tiny = [Device("CPU", "cpu", 1 * MiB, 1 * GiB)]
    assert plan_memory(info, opts(n_ctx=1024), tiny, margins=margins).max_ctx == 0


def test_recurrent_model_has_a_state_not_a_kv_cache(tmp_path: Path) -> None:
    """Mamba: per layer and sequence, (d_conv-1) x (d_inner + 2 n_group d_state) + d_state x
    d_inner f32 values, whatever the context."""
    extra = {
        "mamba.ssm.conv_kernel": 4,
        "mamba.ssm.inner_size": 512,
        "mamba.ssm.state_size": 16,
        "mamba.ssm.time_step_rank": 16,
    }
    info = info_of(tmp_path, Shape(arch="mamba", n_layer=4, n_head=0, n_head_kv=0, extra=extra))
    small = plan_memory(info, opts(n_ctx=1024, n_parallel=2), HOST, find_max_ctx=False)
    big = plan_memory(info, opts(n_ctx=8192, n_parallel=2), HOST, find_max_ctx=False)
    row = 3 * 512 + 16 * 512
    assert small.kv.recurrent_bytes == big.kv.recurrent_bytes == 4 * row * 4 * 2
    assert small.kv.k_bytes == 0 and small.kv.layers == 0


def test_q4_model_is_smaller_than_its_q8_twin(tmp_path: Path) -> None:
    q8_info = info_of(tmp_path, GQA, "a.gguf")
    q4_info = info_of(tmp_path, Shape(**{**GQA.__dict__, "weight_type": Q.Q4_0}), "b.gguf")
    q8_plan = plan_memory(q8_info, opts(n_ctx=1024), HOST, find_max_ctx=False)
    q4_plan = plan_memory(q4_info, opts(n_ctx=1024), HOST, find_max_ctx=False)
    assert q4_plan.weights < q8_plan.weights
    assert q4_plan.kv == q8_plan.kv


def test_weights_the_cpu_repacks_are_held_twice_with_mmap(tmp_path: Path) -> None:
    """llama.cpp copies Q4_0 matrices into its CPU_REPACK layout (AVX2, NEON); with mmap the
    file pages stay mapped too. Norms (1-D) and the token embedding are never repacked."""
    shape = Shape(**{**GQA.__dict__, "weight_type": Q.Q4_0})
    info = info_of(tmp_path, shape)
    host = [Device("CPU", "cpu", 64 * GiB, 64 * GiB, repack=frozenset({"Q4_0"}))]
    e, f, kv = 512, 1024, 128
    matrices = (2 * e * e + 2 * e * kv + 3 * e * f) // 32 * 18  # q4_0: 18 bytes per 32
    output = e * 1000 // 32 * 18
    mapped = plan_memory(info, opts(n_ctx=1024), host, find_max_ctx=False)
    assert mapped.weights_repacked == 8 * matrices + output
    assert mapped.weights == info.tensor_bytes + mapped.weights_repacked
    assert mapped.weights_mapped == info.tensor_bytes
    copied = plan_memory(info, opts(n_ctx=1024, use_mmap=False), host, find_max_ctx=False)
    assert copied.weights == info.tensor_bytes and copied.weights_repacked == 0
    plain = plan_memory(info, opts(n_ctx=1024), HOST, find_max_ctx=False)  # a CPU that does not
    assert plain.weights == info.tensor_bytes
