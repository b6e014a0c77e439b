"""`perplexity`, `compare`, `recommend` (CLI and POST /recommend) on a real ladder of the default
model made with `gguf-serve quantize` (F16 from the Q4_1 default, then Q8_0, Q4_K_M, Q2_K).

Small on purpose: 2 windows of 256 tokens and a tiny speed test keep the module at a few minutes
on two shared cores; the full-size figures are in docs/QUANTIZATION.md.
"""

from __future__ import annotations

import json
import math
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import REPO, start_server

DEFAULT = "smollm2:135m"
RUNGS = ("q8_0", "q4_K_M", "q2_K")
SMALL = ("--window", "256", "--chunks", "2", "--batch", "512", "--threads", "2")
PPL_SMALL = ("--ctx", "256", "--chunks", "2", "--batch", "512", "--threads", "2")
RUN_CTX = "2048"


@dataclass
class Ladder:
    home: Path
    cache: Path

    def env(self, cache: Path | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "GGUF_SERVE_HOME": str(self.home),
            "GGUF_SERVE_CACHE_DIR": str(cache or self.cache),
            "GGUF_SERVE_OLLAMA_MODELS": "",
        }

    def cli(self, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", *args],
            cwd=REPO,
            env=self.env(cache),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def json(self, *args: str, cache: Path | None = None) -> Any:
        done = self.cli(*args, "--json", cache=cache)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ladder(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    root = tmp_path_factory.mktemp("insight")
    made = Ladder(root / "home", root / "cache")
    steps = [
        ("import", str(default_model_path), DEFAULT),
        ("quantize", DEFAULT, "f16", "--allow-requantize", "--threads", "2"),
        *(("quantize", f"{DEFAULT}-f16", rung, "--threads", "2") for rung in RUNGS),
    ]
    for step in steps:
        done = made.cli(*step)
        assert done.returncode == 0, done.stderr
    return made


@pytest.fixture(scope="module")
def compared(ladder: Ladder) -> dict[str, Any]:
    """`compare smollm2` (the whole family) as JSON, with a plot."""
    plot = ladder.cache.parent / "tradeoff.png"
    table: dict[str, Any] = ladder.json(
        "compare", "smollm2", *SMALL, "--ctx", RUN_CTX, "--speed-prompt", "16",
        "--speed-gen", "4", "--plot", str(plot),
    )  # fmt: skip
    table["plot"] = str(plot)
    return table


def _rows(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["quant"]: row for row in table["rows"]}


def test_compare_json_has_every_column_and_the_ladder_is_ordered(compared: dict[str, Any]) -> None:
    rows = _rows(compared)
    assert set(rows) == {"F16", "Q8_0", "Q4_K_M", "Q4_1", "Q2_K"}
    columns = {
        "model", "quant", "file_size", "bits_per_weight", "parameters", "memory", "ppl",
        "ppl_error", "reference", "is_reference", "delta_pct", "delta_error_pct", "kld_mean",
        "kld_p99", "same_top_pct", "prompt_tps", "decode_tps", "pareto",
    }  # fmt: skip
    for row in rows.values():
        assert set(row) == columns
        assert all(row[c] is not None for c in columns), row
        assert math.isfinite(row["ppl"]) and row["ppl"] > 1 and row["ppl_error"] > 0
        assert row["prompt_tps"] > 0 and row["decode_tps"] > 0
        assert row["parameters"] == rows["F16"]["parameters"]
    assert rows["F16"]["is_reference"] and rows["F16"]["kld_mean"] == 0.0
    assert {row["reference"] for row in rows.values()} == {f"{DEFAULT}-f16"}
    # q2_K is the worst by every measure; Q8_0 is close to F16
    assert max(rows.values(), key=lambda r: r["ppl"])["quant"] == "Q2_K"
    assert rows["Q2_K"]["kld_mean"] > rows["Q4_K_M"]["kld_mean"] > rows["Q8_0"]["kld_mean"] > 0
    assert rows["Q8_0"]["same_top_pct"] > rows["Q2_K"]["same_top_pct"]
    assert abs(rows["Q8_0"]["delta_pct"]) < 5
    # memory at the chosen context follows the file sizes
    assert rows["F16"]["memory"] > rows["Q8_0"]["memory"] > rows["Q4_K_M"]["memory"]
    assert rows["Q4_K_M"]["memory"] > rows["Q2_K"]["memory"]
    assert compared["context"] == int(RUN_CTX) and compared["chunks"] == 2
    assert rows["F16"]["pareto"] and rows["Q2_K"]["pareto"]


def test_plot_is_a_png_that_decodes(compared: dict[str, Any]) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(compared["plot"])
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    assert image.std() > 0.05  # not a blank canvas


def test_kld_of_a_model_against_itself_is_zero(ladder: Ladder, compared: dict[str, Any]) -> None:
    f16 = f"{DEFAULT}-f16"
    result = ladder.json("perplexity", f16, "--reference", f16, *PPL_SMALL)
    kld = result["kld"]
    assert kld["reference"] == f16
    assert kld["mean"] == pytest.approx(0.0, abs=1e-5)
    assert kld["p99"] == pytest.approx(0.0, abs=1e-4)
    assert kld["same_top_pct"] == 100.0
    assert kld["ppl_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert result["ppl"] == pytest.approx(_rows(compared)["F16"]["ppl"], rel=1e-6)
    assert result["cached"] is False  # a second, real pass against the cached reference


def test_repeating_a_measurement_reads_the_cache(ladder: Ladder, compared: dict[str, Any]) -> None:
    row = _rows(compared)["Q4_K_M"]
    result = ladder.json("perplexity", row["model"], *PPL_SMALL)
    assert result["cached"] is True
    assert result["ppl"] == row["ppl"]
    assert result["kld"]["mean"] == row["kld_mean"]
    text = ladder.cli("perplexity", row["model"], *PPL_SMALL)
    assert text.returncode == 0
    assert "from the cache" in text.stdout and f"{row['ppl']:.4f}" in text.stdout
    assert "vs smollm2:135m-f16" in text.stdout


def _recommend(ladder: Ladder, memory: int, cache: Path | None = None) -> dict[str, Any]:
    done = ladder.cli(
        "recommend", "smollm2", "--memory", str(memory), "--ctx", RUN_CTX, "--json", cache=cache
    )
    assert done.returncode in (0, 1), done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == (answer["model"] is not None)
    return answer


def _shrinking(ladder: Ladder, cache: Path | None = None) -> list[dict[str, Any]]:
    """Recommendations as the budget shrinks just below each previous choice's need."""
    answers = [_recommend(ladder, 64 * 2**30, cache)]
    while answers[-1]["model"] is not None:
        chosen = next(c for c in answers[-1]["candidates"] if c["model"] == answers[-1]["model"])
        answers.append(_recommend(ladder, int((chosen["memory"] - 1) / 0.9), cache))
    return answers


def test_recommend_from_measurements_shrinks_with_memory(
    ladder: Ladder, compared: dict[str, Any]
) -> None:
    answers = _shrinking(ladder)
    chosen = [a["model"] for a in answers[:-1]]
    assert len(chosen) >= 3 and len(set(chosen)) == len(chosen)  # a different one each time
    assert all(a["basis"] == "measured" for a in answers[:-1])
    assert chosen[-1] == f"{DEFAULT}-q2_K"  # the smallest, when nothing else fits
    assert answers[-1]["reason"][0].startswith("Nothing fits")
    assert all(len(a["reason"]) == 2 for a in answers)
    text = ladder.cli("recommend", "smollm2", "--memory", "64GiB", "--ctx", RUN_CTX)
    assert text.stdout.splitlines()[0] == chosen[0]
    assert "Measured (" in text.stdout


def test_recommend_from_rules_of_thumb_without_measurements(ladder: Ladder) -> None:
    empty = ladder.cache.parent / "empty-cache"
    answers = _shrinking(ladder, empty)
    chosen = [a["quant"] for a in answers[:-1]]
    assert all(a["basis"] == "rules" for a in answers[:-1])
    # Q8_0 when memory allows (not F16); K-quant before legacy; Q2_K only when nothing else fits
    assert chosen == ["Q8_0", "Q4_K_M", "Q4_1", "Q2_K"]
    assert "compare smollm2" in answers[0]["reason"][1]


def test_recommend_over_http(ladder: Ladder, compared: dict[str, Any], tmp_path: Path) -> None:
    server = start_server(ladder.home, tmp_path, GGUF_SERVE_CACHE_DIR=str(ladder.cache))
    try:
        url = f"{server.url}/recommend"
        answer = httpx.post(url, json={"model": "smollm2", "memory": "64GiB", "ctx": 2048}).json()
        assert answer["basis"] == "measured" and answer["model"] is not None
        assert answer == _recommend(ladder, 64 * 2**30)
        small = httpx.post(url, json={"model": "smollm2:135m-q2_K", "memory": "1MiB"})
        assert small.status_code == 200 and small.json()["model"] is None
        bad = httpx.post(url, json={"model": "smollm2", "memory": "lots"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "memory"
        missing = httpx.post(url, json={"model": "nosuch"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()


def test_ctrl_c_stops_a_long_run_cleanly_and_caches_nothing(ladder: Ladder) -> None:
    results = ladder.cache / "insight" / "results"
    before = sorted(results.glob("*.json"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "perplexity", f"{DEFAULT}-q8_0", "--ctx", "256",
         "--chunks", "0", "--batch", "256", "--threads", "2", "--no-kld", "--refresh"],
        cwd=REPO,
        env={**ladder.env(), "TERM": "xterm", "COLUMNS": "120"},
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""

    def drain(until: float) -> None:
        """Read the terminal (a full pty buffer would block the child's writes)."""
        nonlocal seen
        while time.monotonic() < until:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    return
                if not chunk:
                    return
                seen += chunk
            elif proc.poll() is not None:
                return
            if b"ppl " in seen and proc.returncode is None and not interrupted:
                return

    interrupted = False
    try:
        drain(time.monotonic() + 300)  # until a window is scored
        assert b"ppl " in seen, seen.decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        interrupted = True
        drain(time.monotonic() + 120)  # until it exits
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    output = seen.decode(errors="replace")
    assert code == 130, output
    assert "interrupted after" in output and "nothing was cached" in output
    assert "Traceback" not in output
    assert sorted(results.glob("*.json")) == before


def test_a_text_shorter_than_two_windows_is_refused(ladder: Ladder, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.\n")
    done = ladder.cli("perplexity", DEFAULT, "--text", str(short), "--threads", "2")
    assert done.returncode == 1
    assert "needs at least 1024" in done.stderr and "Traceback" not in done.stderr
