"""Incremental detokenization: UTF-8 split across tokens and stop strings across tokens."""

from __future__ import annotations

import pytest

from server.engine.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(p) for p in pieces]


def test_multibyte_character_split_across_tokens_is_never_emitted_broken() -> None:
    data = "héllo 世界 🙂".encode()
    stream = TextStream(())
    out = feed(stream, [data[i : i + 1] for i in range(len(data))])
    out.append(stream.flush())
    assert "".join(out) == "héllo 世界 🙂"
    assert all("\ufffd" not in piece for piece in out)
    # the 4-byte emoji arrives as 4 one-byte tokens: nothing is sent until the last one
    assert out[-5:-2] == ["", "", ""]


def test_invalid_utf8_becomes_replacement_character_not_an_exception() -> None:
    stream = TextStream(())
    text = stream.push(b"ok \xff\xfe") + stream.flush()
    assert text.startswith("ok ")
    assert "\ufffd" in text


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello", " wor", "ld", "!"], ("world",), "Hello "),
        (["a", "bc", "d"], ("bcd",), "a"),
        (["x<", "|im", "_end|>", "tail"], ("<|im_end|>",), "x"),
        (["one two"], ("two", "one"), ""),
        (["aab", "c"], ("abc",), "a"),
        (["no", " stop", " here"], ("zzz",), "no stop here"),
    ],
)
def test_stop_strings_spanning_tokens(
    pieces: list[str], stops: tuple[str, ...], expected: str
) -> None:
    stream = TextStream(stops)
    out = []
    for p in pieces:
        out.append(stream.push(p.encode()))
        if stream.stopped:
            break
    if not stream.stopped:
        out.append(stream.flush())
    assert "".join(out) == expected
    assert stream.stopped == any(s in "".join(pieces) for s in stops)


def test_held_back_prefix_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    stream = TextStream(("STOP",))
    assert stream.push(b"ab ST") == "ab "  # "ST" might start "STOP": held back
    assert stream.push(b"AY") == "STAY"  # it did not
    assert not stream.stopped
