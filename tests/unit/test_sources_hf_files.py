"""Choosing the GGUF file(s) of a Hugging Face repo from a tag (pure; no hub)."""

from __future__ import annotations

import pytest

from server.errors import ModelNotFound, PullError
from server.registry.sources.hf_files import HubFile, choose_gguf

BARTOWSKI = [
    "README.md",
    "Qwen2.5-7B-Instruct-IQ4_XS.gguf",
    "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
    "Qwen2.5-7B-Instruct-Q4_K_S.gguf",
    "Qwen2.5-7B-Instruct-Q4_0.gguf",
    "Qwen2.5-7B-Instruct-Q8_0.gguf",
    "Qwen2.5-7B-Instruct-f16.gguf",
    "Qwen2.5-7B-Instruct-Q3_K_M.gguf",
    "mmproj-Qwen2.5-Q8_0.gguf",
]
SPLIT = [
    "Q8_0/Big-Q8_0-00002-of-00003.gguf",
    "Q8_0/Big-Q8_0-00001-of-00003.gguf",
    "Q8_0/Big-Q8_0-00003-of-00003.gguf",
    "Big-Q4_K_M.gguf",
]


def files(*names: str) -> list[HubFile]:
    return [HubFile(name) for name in names]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Q4_K_M", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
        ("q4_k_m", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),  # case-insensitive
        ("q4_K", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),  # alias q4_K = q4_K_M
        ("latest", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),  # no tag = Q4_K_M
        ("Q4_K_S", "Qwen2.5-7B-Instruct-Q4_K_S.gguf"),
        ("Q4_0", "Qwen2.5-7B-Instruct-Q4_0.gguf"),
        ("IQ4_XS", "Qwen2.5-7B-Instruct-IQ4_XS.gguf"),
        ("F16", "Qwen2.5-7B-Instruct-f16.gguf"),
        ("fp16", "Qwen2.5-7B-Instruct-f16.gguf"),
        ("q8_0", "Qwen2.5-7B-Instruct-Q8_0.gguf"),  # not the mmproj file
        ("Q3_K", "Qwen2.5-7B-Instruct-Q3_K_M.gguf"),
    ],
)
def test_the_tag_picks_one_file(tag: str, expected: str) -> None:
    assert choose_gguf(files(*BARTOWSKI), tag, "org/repo") == [HubFile(expected)]


def test_a_split_is_chosen_whole_and_in_order() -> None:
    chosen = choose_gguf(files(*SPLIT), "q8_0", "org/big")
    assert [f.path for f in chosen] == [
        "Q8_0/Big-Q8_0-00001-of-00003.gguf",
        "Q8_0/Big-Q8_0-00002-of-00003.gguf",
        "Q8_0/Big-Q8_0-00003-of-00003.gguf",
    ]
    assert choose_gguf(files(*SPLIT), "latest", "org/big") == [HubFile("Big-Q4_K_M.gguf")]


def test_a_split_with_a_missing_part_is_refused() -> None:
    with pytest.raises(PullError, match=r"lacks part\(s\) 3"):
        choose_gguf(files(*SPLIT[:2]), "Q8_0", "org/big")


def test_one_gguf_needs_no_tag() -> None:
    assert choose_gguf(files("README.md", "model.gguf"), "latest", "o/r") == [HubFile("model.gguf")]


@pytest.mark.parametrize(
    ("names", "tag", "message"),
    [
        (["README.md"], "Q4_K_M", "has no GGUF files"),
        (["mmproj-x-f16.gguf"], "f16", "has no GGUF files"),
        (BARTOWSKI, "Q2_K", "no GGUF file in org/repo carries the quantization 'Q2_K'"),
        (["a-Q4_K_M.gguf", "b-Q8_0.gguf"], "Q5_K_M", "its GGUF files: a-Q4_K_M.gguf, b-Q8_0.gguf"),
        (["a-Q4_K_M.gguf", "a-Q4_K_M-imat.gguf"], "Q4_K_M", "matches several GGUF files"),
    ],
)
def test_no_or_several_matches_name_what_is_there(names: list[str], tag: str, message: str) -> None:
    with pytest.raises(ModelNotFound, match=message):
        choose_gguf(files(*names), tag, "org/repo")


def test_labels_outside_llama_cpps_list_match_as_written() -> None:
    names = ["M-UD-Q4_K_XL.gguf", "M-Q4_K_M.gguf", "M-UD-IQ2_XXS.gguf"]
    assert choose_gguf(files(*names), "ud-q4_k_xl", "o/r") == [HubFile("M-UD-Q4_K_XL.gguf")]
