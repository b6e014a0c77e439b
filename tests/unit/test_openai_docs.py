"""docs/openai-compatibility.md lists every SDK request field, and its claims point at real tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_params

from server.api.openai import fields

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "openai-compatibility.md"
SECTIONS = {
    "chat": "## `POST /v1/chat/completions`",
    "completions": "## `POST /v1/completions`",
    "embeddings": "## `POST /v1/embeddings`",
}


def sdk_fields(typed_dict: Any) -> set[str]:
    names: set[str] = set()
    for cls in typed_dict.__mro__:
        names |= set(getattr(cls, "__annotations__", {}))
    return names


SDK = {
    "chat": sdk_fields(chat_params.CompletionCreateParamsBase) | {"stream"},
    "completions": sdk_fields(completion_create_params.CompletionCreateParamsBase) | {"stream"},
    "embeddings": sdk_fields(embedding_create_params.EmbeddingCreateParams),
}


def rows(section: str) -> list[tuple[set[str], str, str]]:
    """(field names, status, proved-by cell) of every table row in a section."""
    text = DOC.read_text()
    start = text.index(SECTIONS[section])
    end = text.find("\n## ", start + 1)
    out = []
    for line in text[start : end if end > 0 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[1] not in ("supported", "ignored", "rejected"):
            continue
        out.append((set(re.findall(r"`([a-z_*]+)`", cells[0])), cells[1], cells[3]))
    return out


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_sdk_field_is_documented(section: str) -> None:
    documented = set().union(*(names for names, _, _ in rows(section)))
    assert SDK[section] - documented == set()


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_supported_row_names_existing_tests(section: str) -> None:
    for names, status, proof in rows(section):
        refs = re.findall(r"`([\w/]+\.py)::(\w+)`", proof)
        if status == "supported":
            assert refs, names
        for path, test in refs:
            file = REPO / path if "/" in path else REPO / "tests" / "integration" / path
            assert file.exists(), path
            assert re.search(rf"^def {test}\(", file.read_text(), re.M), f"{path}::{test}"


def test_documented_policy_matches_the_code() -> None:
    chat = rows("chat")
    ignored = set().union(*(n for n, s, _ in chat if s == "ignored"))
    rejected = set().union(*(n for n, s, _ in chat if s == "rejected"))
    assert ignored == set(fields.CHAT_IGNORED)
    for name in fields.CHAT_REJECTED:
        assert name in rejected or (name.startswith("dry_") and "dry_*" in rejected), name
