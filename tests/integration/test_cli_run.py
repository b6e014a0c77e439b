"""`gguf-serve run` as a person uses it: a real pseudo-terminal (pexpect), the real model.

The interactive tests drive the chat against the shared server process; the piped and
in-process ones run the command as a shell pipeline would. Answers are asserted on properties
(token counts, streaming in pieces, the prompt coming back), never on exact prose.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from server.registry import Store
from tests.integration.conftest import REPO, RunningServer, free_port
from tests.integration.fake_servers import FakeOllamaRegistry, running

MODEL = "smollm2:135m"
PROMPT = ">>> "
EVAL_COUNT = re.compile(r"\neval count:\s+(\d+) token\(s\)")


def run_env(home: Path, port: int, state: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose settings point at `home` and a server on `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GGUF_SERVE_")}
    env.update(
        GGUF_SERVE_HOME=str(home),
        GGUF_SERVE_PORT=str(port),
        GGUF_SERVE_OLLAMA_MODELS="",
        GGUF_SERVE_LOAD__N_THREADS="2",
        GGUF_SERVE_LOAD__N_CTX="2048",
        XDG_STATE_HOME=str(state),  # the readline history goes here, not into ~
        TERM="xterm-256color",
        **extra,
    )
    return env


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture
def registry_server() -> Iterator[FakeOllamaRegistry]:
    yield from running(FakeOllamaRegistry())  # type: ignore[misc]


@pytest.fixture
def chat(server: RunningServer, model_home: Path, tmp_path: Path) -> Iterator[pexpect.spawn[str]]:
    """`gguf-serve run smollm2:135m` in a pseudo-terminal, talking to the shared server."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "server", "run", MODEL],
        env=run_env(model_home, port_of(server), tmp_path / "state"),
        cwd=str(REPO),
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 200),
    )
    child.expect_exact(PROMPT)
    yield child
    if child.isalive():
        child.sendline("/bye")
        child.expect(pexpect.EOF, timeout=20)
    child.close()


def command(child: pexpect.spawn[str], line: str, reply: str) -> None:
    child.sendline(line)
    child.expect_exact(reply)
    child.expect_exact(PROMPT)


def ask(child: pexpect.spawn[str], message: str) -> str:
    """Send a message; return everything up to the next prompt (answer and stats)."""
    child.sendline(message)
    child.expect_exact(message)  # the terminal's echo of what was typed
    child.expect_exact(PROMPT)
    return str(child.before)


def test_a_streamed_answer_arrives_in_pieces_and_the_prompt_returns(
    chat: pexpect.spawn[str],
) -> None:
    command(chat, "/set parameter temperature 0", "Set parameter 'temperature' to '0'")
    command(chat, "/set parameter num_predict 48", "Set parameter 'num_predict' to '48'")
    command(chat, "/set verbose", "Set 'verbose' mode.")
    chat.sendline("Tell me about the sea.")
    chat.expect_exact("Tell me about the sea.")
    pieces: list[tuple[float, str]] = []
    seen = ""
    deadline = time.monotonic() + 90
    while PROMPT not in seen and time.monotonic() < deadline:
        try:
            piece = chat.read_nonblocking(4096, timeout=5)
        except pexpect.TIMEOUT:
            continue
        pieces.append((time.monotonic(), piece))
        seen += piece
    assert PROMPT in seen, seen
    answer = seen.split("total duration:")[0]
    assert len(answer.split()) >= 10, answer
    with_text = [t for t, piece in pieces if re.search(r"\w", piece.split("total duration")[0])]
    # A client that waited for the whole answer would print it in one write.
    assert len(with_text) >= 3, pieces
    assert with_text[-1] - with_text[0] > 0.05
    assert [int(n) for n in EVAL_COUNT.findall(seen)] == [48]


def test_set_parameter_changes_the_answer(chat: pexpect.spawn[str]) -> None:
    command(chat, "/set verbose", "Set 'verbose' mode.")
    command(chat, "/set parameter temperature 0", "Set parameter 'temperature' to '0'")
    command(chat, "/set parameter num_predict 3", "Set parameter 'num_predict' to '3'")
    out = ask(chat, "Write a poem about autumn leaves.")
    assert [int(n) for n in EVAL_COUNT.findall(out)] == [3]
    command(chat, "/clear", "Cleared session context")
    command(chat, "/set parameter num_predict 12", "Set parameter 'num_predict' to '12'")
    first = ask(chat, "Write a poem about autumn leaves.")
    assert [int(n) for n in EVAL_COUNT.findall(first)] == [12]
    command(chat, "/clear", "Cleared session context")
    again = ask(chat, "Write a poem about autumn leaves.")
    # temperature 0: the same conversation gives the same answer
    assert first.split("total duration:")[0] == again.split("total duration:")[0]
    command(chat, "/set parameter num_predict many", "Couldn't set parameter")
    command(chat, "/set parameter wibble 1", "unknown parameter 'wibble'")


def test_ctrl_c_stops_the_answer_and_the_next_prompt_works(
    chat: pexpect.spawn[str], server: RunningServer
) -> None:
    command(chat, "/set parameter num_predict 1500", "Set parameter 'num_predict' to '1500'")
    chat.sendline("Write a very long story about a dragon named Ember.")
    chat.expect_exact("Ember.")
    chat.expect(r"\w+\W+\w+\W+\w+")  # a few words of the answer have been printed
    stopped = time.monotonic()
    chat.sendintr()
    chat.expect_exact(PROMPT, timeout=10)
    assert time.monotonic() - stopped < 10
    deadline = time.monotonic() + 10  # the server frees the slot at its next decode step
    while any(s["state"] != "idle" for s in server.slots()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(s["state"] == "idle" for s in server.slots())
    command(chat, "/set parameter num_predict 6", "Set parameter 'num_predict' to '6'")
    command(chat, "/set verbose", "Set 'verbose' mode.")
    out = ask(chat, "Now say hello.")
    assert [int(n) for n in EVAL_COUNT.findall(out)] == [6]
    # Ctrl-C at the prompt does not leave; Ctrl-D does, cleanly.
    chat.sendintr()
    chat.expect_exact("Use Ctrl + d or /bye to exit.")
    chat.expect_exact(PROMPT)
    chat.sendeof()
    chat.expect(pexpect.EOF, timeout=20)
    chat.close()
    assert chat.exitstatus == 0


def test_multi_line_input_show_info_and_help(chat: pexpect.spawn[str]) -> None:
    command(chat, "/set parameter num_predict 4", "Set parameter 'num_predict' to '4'")
    command(chat, "/set verbose", "Set 'verbose' mode.")
    chat.sendline('"""Here is a list:')
    chat.expect_exact("... ")
    chat.sendline("apples")
    chat.expect_exact("... ")
    chat.sendline('pears"""')
    chat.expect(r"\neval count:\s+4 token")
    chat.expect_exact(PROMPT)
    command(chat, "/show info", "architecture        llama")
    command(chat, "/show parameters", "num_predict")
    command(chat, "/?", "/set            Set session variables")
    command(chat, "/nonsense", "Unknown command '/nonsense'. Type /? for help")
    chat.sendline("/bye")
    chat.expect(pexpect.EOF, timeout=20)


def test_history_is_kept_in_the_state_directory(
    server: RunningServer, model_home: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = run_env(model_home, port_of(server), state)
    child = pexpect.spawn(
        sys.executable, ["-m", "server", "run", MODEL], env=env, cwd=str(REPO), encoding="utf-8"
    )
    child.expect_exact(PROMPT, timeout=90)
    command(child, "/show system", "No system message was specified.")
    child.sendline("/bye")
    child.expect(pexpect.EOF, timeout=20)
    history = (state / "gguf-serve" / "history").read_text().splitlines()
    assert history[-2:] == ["/show system", "/bye"]


# ---- one-shot and piped ---------------------------------------------------------------------


def run_once(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_piped_input_prints_only_the_answer(
    server: RunningServer, model_home: Path, tmp_path: Path, verbose: bool
) -> None:
    env = run_env(model_home, port_of(server), tmp_path)
    flags = ["--verbose"] if verbose else []
    done = run_once(
        env, MODEL, "-p", "num_predict=24", *flags, stdin="What is the capital of France?\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no answer"
    assert done.stdout.endswith("\n")
    assert "\x1b" not in done.stdout  # no colours, spinners or progress in a pipeline
    assert ">>>" not in done.stdout
    assert "eval count" not in done.stdout
    if verbose:
        assert re.search(r"^eval rate:\s+[\d.]+ tokens/s$", done.stderr, re.M), done.stderr
    else:
        assert done.stderr == ""


def test_a_prompt_argument_answers_once_with_json_format(
    server: RunningServer, model_home: Path, tmp_path: Path
) -> None:
    env = run_env(model_home, port_of(server), tmp_path)
    done = run_once(
        env,
        MODEL,
        "--parameter",
        "temperature=0",
        "--format",
        "json",
        "Give a JSON object about cats.",
    )
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), dict | list)


def test_bad_input_is_one_line_and_a_status(
    server: RunningServer, model_home: Path, tmp_path: Path, registry_server: FakeOllamaRegistry
) -> None:
    env = run_env(model_home, port_of(server), tmp_path)
    done = run_once(env, "Bad Name!", "hi")
    assert done.returncode == 1
    assert done.stderr.startswith("gguf-serve: error:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_once(env, f"{registry_server.host}/library/absent:1", "hi")  # pulled: not there
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("gguf-serve: error:"), done.stderr
    assert "not found" in done.stderr.splitlines()[-1]
    done = run_once(env, MODEL, "--format", "yaml", "hi")
    assert done.returncode == 2
    assert "only 'json'" in done.stderr
    done = run_once(env, MODEL, stdin="")
    assert done.returncode == 2
    assert "empty" in done.stderr
    done = run_once(env, MODEL, "-p", "temperature", "hi")
    assert done.returncode == 2
    assert "use NAME=VALUE" in done.stderr


def test_without_a_server_the_engine_runs_in_process(model_home: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = run_env(model_home, port, tmp_path)
    done = run_once(env, MODEL, "--verbose", "-p", "num_predict=16", stdin="Say hello.")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "load duration:" in done.stderr  # this process loaded the model itself
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)  # and opened no TCP port


def test_a_missing_model_is_pulled_with_a_progress_bar_then_answers(
    registry_server: FakeOllamaRegistry, default_model_path: Path, tmp_home: Path, tmp_path: Path
) -> None:
    registry_server.add_model("library/smol", "1", default_model_path.read_bytes(), template=None)
    name = f"{registry_server.host}/library/smol:1"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "server", "run", name, "--verbose", "-p", "num_predict=16", "Say hello."],
        env=run_env(tmp_home, free_port(), tmp_path / "state"),
        cwd=str(REPO),
        encoding="utf-8",
        timeout=180,
        dimensions=(40, 160),
    )
    child.expect_exact("pulling manifest")
    child.expect(r"pulling [0-9a-f]{12}")
    child.expect(r"\d+(\.\d+)?/\d+(\.\d+)? MB")  # rich's download column: a real bar
    child.expect(r"\neval count:\s+\d+ token")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert Store(tmp_home).find(name) is not None
