"""The insight package without a model: statistics, rules of thumb, Pareto front, texts, cache."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer

from server.cli import main
from server.cli.compare import parse_memory
from server.engine.logit_math import TopK
from server.errors import InvalidRequest
from server.insight.cache import InsightCache, ReferenceLogits, cache_key
from server.insight.compare import pareto_front
from server.insight.memory_column import memory_at_context
from server.insight.recommend import binary_size
from server.insight.results import PerplexityResult, TextInfo
from server.insight.rules import rule_key, tier
from server.insight.stats import kld_stats, mean_and_error, perplexity
from server.insight.texts import load_text, pydoc_text
from server.registry import read_gguf_info

MakeGGUF = Callable[..., Path]


def test_perplexity_and_its_error_follow_llama_cpp() -> None:
    nll = np.array([1.0, 2.0, 3.0, 2.5, 1.5])
    ppl, error = perplexity(nll)
    mean = nll.mean()
    assert ppl == pytest.approx(math.exp(mean))
    # llama.cpp: sqrt((<x^2> - <x>^2) / (n - 1)) * ppl
    assert error == pytest.approx(ppl * math.sqrt(((nll**2).mean() - mean**2) / 4))


def test_mean_error_needs_more_than_ten_values() -> None:
    assert mean_and_error(np.arange(10.0))[1] == 0.0
    values = np.arange(11.0)
    mean, error = mean_and_error(values)
    assert mean == 5.0
    assert error == pytest.approx(math.sqrt(((values**2).mean() - 25.0) / 10))


def test_kld_stats_percentiles_same_top_and_ratio() -> None:
    kld = np.arange(101.0)  # 0..100: the p-th percentile is p
    same = np.array([True] * 75 + [False] * 26)
    nll = np.full(101, 2.0) + np.linspace(0, 0.1, 101)
    nll_ref = np.full(101, 1.9) + np.linspace(0, 0.1, 101)
    stats = kld_stats(kld, same, nll, nll_ref, reference="ref:f16", top_k=8)
    assert (stats.median, stats.p90, stats.p99, stats.maximum) == (50.0, 90.0, 99.0, 100.0)
    assert stats.mean == 50.0
    assert stats.same_top_pct == pytest.approx(100 * 75 / 101)
    assert stats.ppl_ratio == pytest.approx(math.exp(0.1))
    assert stats.delta_pct == pytest.approx(100 * (math.exp(0.1) - 1))
    assert stats.ppl_ratio_error == pytest.approx(0.0, abs=1e-9)  # perfectly correlated


def test_rules_prefer_q8_over_f16_and_k_quants_over_legacy() -> None:
    def best(*candidates: tuple[str, float, int, int]) -> str:
        return max(candidates, key=lambda c: rule_key(*c))[0]

    small, big = 135_000_000, 1_700_000_000
    assert best(("F16", 16.0, small, 440), ("Q8_0", 8.5, small, 320)) == "Q8_0"
    assert best(("Q4_0", 4.5, small, 270), ("Q4_K_M", 4.8, small, 275)) == "Q4_K_M"
    assert best(("Q3_K_M", 3.9, small, 260), ("Q4_K_S", 4.6, small, 272)) == "Q4_K_S"
    # a smaller model at Q4_K_M beats a bigger one at Q2_K; a bigger one at 4+ bits wins
    assert best(("Q4_K_M", 4.8, small, 300), ("Q2_K", 2.9, big, 900)) == "Q4_K_M"
    assert best(("Q8_0", 8.5, small, 300), ("Q4_K_M", 4.8, big, 1200)) == "Q4_K_M"
    assert tier("IQ4_XS", 4.3) > tier("Q3_K_L", 3.5)
    assert tier("NEW_TYPE", 6.0) == 3.0  # unknown: placed by bits per weight


def test_pareto_front() -> None:
    points = [(100, 5.0), (200, 1.0), (150, 6.0), (300, 1.0), (90, 30.0)]
    assert pareto_front(points) == [True, True, False, False, True]


def test_pydoc_text_ships_with_python_and_is_stable() -> None:
    text = pydoc_text()
    assert text.name.startswith("pydoc (Python ")
    assert len(text.content) > 100_000
    assert text.sha256 == pydoc_text().sha256
    assert not text.content.endswith("\n")


def test_load_text_file_drops_one_trailing_newline_like_llama_cpp(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello\n\n", encoding="utf-8")
    assert load_text(path).content == "hello\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe bad", "not UTF-8"), (b"  \n", "is empty"), (None, "cannot read")],
)
def test_load_text_refuses_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidRequest, match=message):
        load_text(path)


def _result(digest: str, ppl: float) -> PerplexityResult:
    return PerplexityResult(
        model="m:1",
        model_digest=digest,
        quant="Q8_0",
        text=TextInfo(name="t", sha256="00", tokens=10),
        n_ctx=512,
        chunks=2,
        tokens_scored=510,
        type_k="f16",
        type_v="f16",
        flash_attn="auto",
        ppl=ppl,
        ppl_error=0.1,
        seconds=1.0,
        measured_at=datetime.now(UTC),
    )


def test_cache_round_trips_and_ignores_damaged_files(tmp_path: Path) -> None:
    cache = InsightCache(tmp_path)
    key = cache_key(model="sha256:1", chunks=2)
    assert key != cache_key(model="sha256:1", chunks=3)
    assert cache.load_model("results", key, PerplexityResult) is None
    cache.save_model("results", key, _result("sha256:1", 12.5))
    loaded = cache.load_model("results", key, PerplexityResult)
    assert loaded is not None and loaded.ppl == 12.5
    assert [r.ppl for r in cache.results()] == [12.5]
    (tmp_path / "results" / f"{key}.json").write_text("{not json")
    assert cache.load_model("results", key, PerplexityResult) is None
    assert list(cache.results()) == []

    ref = ReferenceLogits(
        model_digest="sha256:2",
        tokens=np.arange(8, dtype=np.int32),
        chunks=2,
        total_chunks=5,
        per_chunk=3,
        top=TopK(np.arange(12, dtype=np.int32).reshape(6, 2), np.ones((6, 2), np.float32)),
        nll=np.linspace(0, 1, 6),
    )
    cache.save_reference("r", ref)
    back = cache.load_reference("r")
    assert back is not None and back.total_chunks == 5
    assert back.chunk(1).ids.tolist() == [[6, 7], [8, 9], [10, 11]]
    (tmp_path / "reference" / "r.npz").write_bytes(b"garbage")
    assert cache.load_reference("r") is None
    assert not list(tmp_path.rglob(".tmp-*"))  # nothing half-written left behind


def test_memory_column_is_the_planners_one_sequence_on_the_host(make_gguf: MakeGGUF) -> None:
    from server.engine.memory import plan_memory
    from server.engine.options import LoadOptions
    from server.engine.plan_types import Device

    info = read_gguf_info(make_gguf(context_length=4096))  # 1 layer, 2 KV heads of 16
    need = memory_at_context(info, 1024)
    host = Device("CPU", "cpu", 1 << 34, 1 << 34)
    options = LoadOptions(n_ctx=1024, n_parallel=1, n_gpu_layers=0, use_mmap=False)
    plan = plan_memory(info, options, [host])
    assert need == plan.total and plan.kv.total > 0
    assert need > info.tensor_bytes  # weights, then KV and buffers
    assert memory_at_context(info, 2048) > need  # more context, more KV
    assert memory_at_context(info, 1024, "q8_0", "q8_0") < need  # a smaller KV type
    assert memory_at_context(info, 1 << 20) == memory_at_context(info, 4096)  # trained length


def test_memory_sizes_parse_and_print() -> None:
    assert parse_memory("8GiB") == 8 * 2**30
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1500") == 1500
    for bad in ("lots", "0", "-1GiB"):
        with pytest.raises(typer.BadParameter):
            parse_memory(bad)
    assert binary_size(8 * 2**30) == "8.0 GiB"
    assert binary_size(300 * 2**20) == "300.0 MiB"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    code = caught.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_cli_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    home = ("--home", str(tmp_home))
    code, _, err = _cli(capsys, *home, "perplexity", "nosuch:1b")
    assert (
        code == 1
        and err.strip() == "gguf-serve: error: model 'nosuch:1b' not found, try pulling it first"
    )
    code, _, err = _cli(capsys, *home, "compare", "nosuch")
    assert code == 1 and "no model called 'nosuch'" in err
    code, _, err = _cli(capsys, *home, "recommend", "fake", "--memory", "lots")
    assert code == 2 and "is not a size" in err
    code, _, err = _cli(capsys, *home, "perplexity", "fake:1b", "--kv-type", "q9")
    assert code == 2 and "q9" in err
    _cli(capsys, *home, "import", str(make_gguf()), "fake:1b")
    code, out, _ = _cli(capsys, *home, "recommend", "fake", "--memory", "1KiB", "--ctx", "512")
    assert code == 1 and out.strip().startswith("Nothing fits")
    code, out, _ = _cli(capsys, *home, "recommend", "fake", "--memory", "8GiB", "--json")
    assert code == 0 and '"model": "fake:1b"' in out
