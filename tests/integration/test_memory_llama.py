"""The plan against llama.cpp's own sizes: a dry run (`no_alloc`, as llama.cpp's `--fit` does)
of the default model and of synthetic GQA, sliding-window and MoE headers, and a real load.

The KV cache must match llama.cpp to the byte (its log rounds to 0.01 MiB); the compute buffer,
a fitted formula, within the bounds docs/MEMORY.md gives (never much below llama.cpp's figure).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.engine.llama_report import BufferLog, dry_run
from server.engine.loader import LlamaHandles
from server.engine.memory import Device, plan_memory
from server.engine.options import LoadOptions
from server.registry import read_gguf_info
from tests.synthetic_gguf import Shape, write_model

GiB = 1 << 30
HOST = [Device("CPU", "cpu", 64 * GiB, 64 * GiB)]
LOG_ROUNDING = 6 * 1024  # llama.cpp prints MiB with two decimals

CASES = [
    {"n_ctx": 2048, "n_parallel": 1},
    {"n_ctx": 8192, "n_parallel": 4, "type_k": "q8_0", "type_v": "q8_0"},
    {"n_ctx": 4096, "n_parallel": 2, "flash_attn": "off"},
    {"n_ctx": 8192, "n_parallel": 1, "type_k": "q4_0", "type_v": "q4_0", "n_ubatch": 256},
]
SHAPES = {
    "gqa": Shape(n_layer=8, n_embd=512, n_head=8, n_head_kv=2, n_ff=1536, n_vocab=1000),
    "gemma": Shape(
        arch="gemma3",
        n_layer=12,
        n_embd=256,
        n_head=4,
        n_head_kv=1,
        head_dim=128,
        n_ff=1024,
        tied=True,
        sliding_window=512,
    ),
    "moe": Shape(
        n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=512, n_expert=8, n_expert_used=2
    ),
}


def opts(**kw: object) -> LoadOptions:
    return LoadOptions.model_validate({"n_gpu_layers": 0, "n_threads": 2, **kw})


def check(path: Path, options: LoadOptions) -> None:
    plan = plan_memory(read_gguf_info(path), options, HOST, find_max_ctx=False)
    report = dry_run(path, options)
    assert abs(plan.kv.total - report.kv_total) <= LOG_ROUNDING, (plan.kv, report)
    llama_compute = report.total("compute")
    assert 0.9 * llama_compute <= plan.compute <= 1.25 * llama_compute, (plan.compute, report)
    assert abs(plan.output - report.total("output")) <= LOG_ROUNDING


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_default_model_plan_matches_llama_cpp(
    default_model_path: Path, case: dict[str, object]
) -> None:
    check(default_model_path, opts(**case))


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("swa_full", [True, False])
def test_synthetic_architectures_match_llama_cpp(tmp_path: Path, name: str, swa_full: bool) -> None:
    path = write_model(tmp_path / f"{name}.gguf", SHAPES[name])
    for case in CASES:
        check(path, opts(**case, swa_full=swa_full))


def test_a_real_load_reports_what_the_plan_says(default_model_path: Path) -> None:
    """Allocated for real: llama.cpp's model, KV, compute and output buffers against the plan."""
    options = opts(n_ctx=4096, n_parallel=2, type_k="q8_0", type_v="q8_0")
    plan = plan_memory(read_gguf_info(default_model_path), options, HOST, find_max_ctx=False)
    with BufferLog() as log:
        handles = LlamaHandles(default_model_path, options, n_outputs_max=options.n_parallel)
    handles.close()
    report = log.report
    assert abs(report.total("model") - plan.weights) <= LOG_ROUNDING
    assert abs(report.total("kv") - plan.kv.total) <= LOG_ROUNDING
    assert 0.9 * report.total("compute") <= plan.compute <= 1.1 * report.total("compute")
