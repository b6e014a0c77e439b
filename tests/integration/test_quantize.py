"""`gguf-serve quantize`: a ladder of quantizations of the default model that load and generate.

The ladder is made once per session: F16 from the Q4_1 default (a requantization, through the
real CLI), then Q4_K_M (CLI) and Q8_0 / Q5_K_M / Q3_K_M / Q2_K (the Registry API) from F16.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.engine.factory import start_engine
from server.engine.loader import ModelFacts
from server.engine.options import LoadOptions
from server.engine.quantize import LlamaQuantizer, QuantizeError
from server.engine.types import GenerationRequest, SamplingParams
from server.errors import InvalidRequest
from server.registry import PullProgress, Registry
from server.settings import load_settings
from tests.integration.conftest import REPO

DEFAULT = "smollm2:135m"
API_RUNGS = ("q8_0", "q5_K_M", "q3_K_M", "q2_K")


@dataclass
class Ladder:
    home: Path
    cli_output: str
    progress: dict[str, list[PullProgress]]

    def registry(self) -> Registry:
        return Registry(load_settings(home=self.home, ollama_models=""))


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GGUF_SERVE_HOME": str(home), "GGUF_SERVE_OLLAMA_MODELS": ""}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="session")
def ladder(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    home = tmp_path_factory.mktemp("quantize-home")
    registry = Registry(load_settings(home=home, ollama_models=""))
    registry.import_file(default_model_path, DEFAULT)
    output = []
    for args in (
        ("quantize", DEFAULT, "f16", "--allow-requantize", "--threads", "2"),
        ("quantize", f"{DEFAULT}-f16", "q4_K_M", "--threads", "2"),
    ):
        done = cli(home, *args)
        assert done.returncode == 0, done.stderr
        output.append(done.stdout + done.stderr)
    progress: dict[str, list[PullProgress]] = {}
    for rung in API_RUNGS:
        events = progress.setdefault(rung, [])
        registry.quantize(f"{DEFAULT}-f16", rung, LlamaQuantizer(2), progress=events.append)
    return Ladder(home, "\n".join(output), progress)


def generate(path: Path) -> str:
    opts = LoadOptions(n_ctx=512, n_parallel=1, n_threads=2, n_batch=128, n_ubatch=128)
    engine = start_engine(path, opts, ModelFacts(8192, 30), n_ctx_cap=8192, max_queue=4)
    try:
        prompt = engine.tokenize(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        request = GenerationRequest(prompt, sampling=SamplingParams(temperature=0.0), max_tokens=16)

        async def collect() -> str:
            return "".join([event.text async for event in engine.submit(request)])

        return asyncio.run(collect())
    finally:
        engine.close()


RUNGS = [
    ("smollm2:135m-f16", "F16", DEFAULT),
    ("smollm2:135m-q4_K_M", "Q4_K_M", f"{DEFAULT}-f16"),
    ("smollm2:135m-q8_0", "Q8_0", f"{DEFAULT}-f16"),
    ("smollm2:135m-q5_K_M", "Q5_K_M", f"{DEFAULT}-f16"),
    ("smollm2:135m-q3_K_M", "Q3_K_M", f"{DEFAULT}-f16"),
    ("smollm2:135m-q2_K", "Q2_K", f"{DEFAULT}-f16"),
]


@pytest.mark.parametrize(("name", "quant", "parent"), RUNGS)
def test_each_rung_records_its_source_loads_and_generates(
    ladder: Ladder, name: str, quant: str, parent: str
) -> None:
    registry = ladder.registry()
    record = registry.record(name)
    parent_record = registry.record(parent)
    resolved = registry.resolve(name)
    assert resolved.info.quant == quant
    assert record.config.file_type == quant
    facts = record.config.gguf_serve
    assert facts is not None and facts.source is not None
    source = facts.source.model_dump()
    assert source["type"] == "quantize"
    assert source["from"] == f"registry.ollama.ai/library/{parent}"
    assert source["from_id"] == parent_record.digest
    assert source["from_digest"] == parent_record.model_digest
    assert source["quant"] == quant
    text = generate(resolved.path)
    assert text.strip(), f"{name} generated nothing"
    if quant in ("F16", "Q8_0", "Q5_K_M"):
        assert "Paris" in text, f"{name}: {text!r}"


def test_the_ladder_shrinks_and_reports_tensor_progress(ladder: Ladder) -> None:
    registry = ladder.registry()
    sizes = [registry.record(name).model_path.stat().st_size for name, _, _ in RUNGS]
    f16, q4_k_m, q8_0, q5_k_m, q3_k_m, q2_k = sizes
    assert f16 > q8_0 > q5_k_m > q4_k_m > q3_k_m > q2_k
    assert "quantized smollm2:135m to F16 as smollm2:135m-f16" in ladder.cli_output
    assert "272/272 tensors" in ladder.cli_output
    for events in ladder.progress.values():
        counted = [e for e in events if e.total is not None]
        assert counted[-1].completed == counted[-1].total == 272
        assert [e.status for e in events[-2:]] == ["writing manifest", "success"]


def test_a_quantized_source_needs_allow_requantize(ladder: Ladder) -> None:
    done = cli(ladder.home, "quantize", DEFAULT, "q8_0")
    assert done.returncode == 1
    assert "'smollm2:135m' is already quantized (Q4_1)" in done.stderr
    assert "--allow-requantize" in done.stderr
    with pytest.raises(QuantizeError):  # and llama.cpp itself refuses it too
        LlamaQuantizer(2).quantize(
            ladder.registry().record(DEFAULT).model_path,
            ladder.home / "refused.gguf",
            "Q8_0",
            allow_requantize=False,
            progress=lambda done, total: None,
        )
    assert not (ladder.home / "refused.gguf").exists()


def test_unknown_types_and_clobbering_names_are_refused(ladder: Ladder) -> None:
    registry = ladder.registry()
    with pytest.raises(InvalidRequest, match=r"cannot quantize to 'q9_9'; choose one of: .*q4_K_M"):
        registry.quantize(f"{DEFAULT}-f16", "q9_9", LlamaQuantizer())
    with pytest.raises(InvalidRequest, match="would replace its source"):
        registry.quantize(f"{DEFAULT}-f16", "q8_0", LlamaQuantizer(), as_name=f"{DEFAULT}-f16")
