"""The pieces of `gguf-serve run` that need no model: parameters, input, wrapping, stats."""

from __future__ import annotations

import io

import pytest

from server.cli.commands import describe
from server.cli.repl import read_message
from server.cli.session import ChatSession, parse_parameter
from server.cli.turn import go_duration, print_stats
from server.cli.wordwrap import WordWrapper


class Lines:
    """A LineReader stand-in that replays typed lines and records the prompts shown."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


def test_multi_line_messages_between_triple_quotes() -> None:
    reader = Lines('"""first line', "  second", 'third"""')
    assert read_message(reader) == ("first line\n  second\nthird", False)  # type: ignore[arg-type]
    assert reader.prompts == [">>> ", "... ", "... "]
    assert read_message(Lines('"""one line"""')) == ("one line", False)  # type: ignore[arg-type]
    assert read_message(Lines("  /show info ")) == ("/show info", True)  # type: ignore[arg-type]
    assert read_message(Lines('"""', "/not a command", '"""')) == ("/not a command", False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("temperature", ["0.2"], 0.2),
        ("seed", ["42"], 42),
        ("num_ctx", ["4096"], 4096),
        ("stop", ["<|im_end|>", '"two words"'], ["<|im_end|>", "two words"]),
    ],
)
def test_parameters_are_typed(name: str, values: list[str], expected: object) -> None:
    assert parse_parameter(name, values) == expected


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("temperature", ["hot"], "invalid value 'hot' for parameter 'temperature'"),
        ("seed", [], "parameter 'seed' needs a value"),
        ("wibble", ["1"], "unknown parameter 'wibble'"),
    ],
)
def test_bad_parameters_say_why(name: str, values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_parameter(name, values)


def test_the_request_carries_system_options_and_history() -> None:
    session = ChatSession(model="m:1", system="Be brief.", options={"seed": 1}, format="json")
    session.remember("hi", "hello")
    body = session.request("again")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert body["options"] == {"seed": 1} and body["format"] == "json"
    session.clear()
    assert len(session.request("x")["messages"]) == 2  # the system prompt survives /clear


def test_words_wrap_at_the_width_and_indentation_stays() -> None:
    out: list[str] = []
    wrap = WordWrapper(out.append, 20)
    for piece in ["The qui", "ck brown fox jum", "ps over the lazy dog.\n", "    indented"]:
        wrap.write(piece)
    wrap.flush()
    lines = "".join(out).split("\n")
    assert lines == ["The quick brown fox", "jumps over the lazy", "dog.", "    indented"]
    assert all(len(line) <= 20 for line in lines)


def test_go_durations_and_stats() -> None:
    assert go_duration(1_500_000_000) == "1.5s"
    assert go_duration(12_345_000) == "12.345ms"
    assert go_duration(850_000) == "850µs"
    assert go_duration(62_500_000_000) == "1m2.5s"
    out = io.StringIO()
    print_stats(
        {
            "total_duration": 2_000_000_000,
            "prompt_eval_count": 10,
            "prompt_eval_duration": 500_000_000,
            "eval_count": 20,
            "eval_duration": 1_000_000_000,
        },
        out,
    )
    assert out.getvalue().splitlines() == [
        "total duration:       2s",
        "prompt eval count:    10 token(s)",
        "prompt eval duration: 500ms",
        "prompt eval rate:     20.00 tokens/s",
        "eval count:           20 token(s)",
        "eval duration:        1s",
        "eval rate:            20.00 tokens/s",
    ]


def test_show_info_reads_the_model_facts() -> None:
    text = describe(
        {
            "model_info": {
                "general.architecture": "llama",
                "general.parameter_count": 134_515_008,
                "llama.context_length": 8192,
                "llama.embedding_length": 576,
            },
            "details": {"quantization_level": "Q4_1"},
            "capabilities": ["completion"],
        }
    )
    assert "architecture        llama" in text
    assert "context length      8192" in text
    assert "quantization        Q4_1" in text
