"""Choosing the GGUF file of a Hugging Face repo that a tag such as `Q4_K_M` names.

Ollama's rule: the tag is a quantization label matched case-insensitively against the file
names; no tag (`latest`) means `Q4_K_M`. A split GGUF (`-00001-of-0000N.gguf`) is one choice
made of all its parts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from server.errors import ModelNotFound, PullError
from server.registry.splits import SPLIT_NAME
from server.registry.tags import DEFAULT_TAG, normalize_quant

DEFAULT_QUANT = "Q4_K_M"
_LISTED = 12  # file names quoted in an error message


@dataclass(frozen=True)
class HubFile:
    """One file of a repo as the hub lists it: path, size and LFS sha256 (None if not LFS)."""

    path: str
    size: int | None = None
    sha256: str | None = None


def _label_pattern(label: str) -> re.Pattern[str]:
    # Not inside a longer word: `Q4_K` must not match `Q4_K_M`, nor `Q4_XS` match `IQ4_XS`.
    return re.compile(
        rf"(?<![A-Za-z0-9]){re.escape(label)}(?![A-Za-z0-9]|_[A-Za-z0-9])", re.IGNORECASE
    )


def _is_model_gguf(path: str) -> bool:
    base = path.rsplit("/", 1)[-1].lower()
    return base.endswith(".gguf") and "mmproj" not in base  # projectors are not the model


def _units(files: Sequence[HubFile]) -> list[list[HubFile]]:
    """Files grouped into models: a single file, or every part of one split in order."""
    singles: list[list[HubFile]] = []
    splits: dict[tuple[str, int], dict[int, HubFile]] = {}
    for file in files:
        match = SPLIT_NAME.match(file.path)
        if match is None:
            singles.append([file])
            continue
        key = (match.group("prefix"), int(match.group("count")))
        splits.setdefault(key, {})[int(match.group("index"))] = file
    units = list(singles)
    for (prefix, count), parts in sorted(splits.items()):
        missing = [i for i in range(1, count + 1) if i not in parts]
        if missing:
            raise PullError(
                f"the split GGUF {prefix}-*-of-{count:05d}.gguf lacks part(s) "
                f"{', '.join(str(i) for i in missing)} in the repo"
            )
        units.append([parts[i] for i in range(1, count + 1)])
    return units


def choose_gguf(files: Sequence[HubFile], tag: str, repo: str) -> list[HubFile]:
    """The file, or the split parts in order, whose name carries the quant label `tag`.

    Raises ModelNotFound when the repo has no GGUF or none (or more than one) matches, naming
    the files that are there; PullError for a split with missing parts.
    """
    ggufs = [f for f in files if _is_model_gguf(f.path)]
    if not ggufs:
        raise ModelNotFound(f"the Hugging Face repo {repo} has no GGUF files")
    units = _units(ggufs)
    latest = tag.lower() == DEFAULT_TAG
    wanted = DEFAULT_QUANT if latest else tag
    labels = {wanted, normalize_quant(wanted) or wanted}
    patterns = [_label_pattern(label) for label in labels]
    matches = [u for u in units if any(p.search(u[0].path) for p in patterns)]
    if latest and not matches and len(units) == 1:
        return units[0]  # one model in the repo: no tag needed to pick it
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(u[0].path for u in (matches or units)[:_LISTED])
    if matches:
        raise ModelNotFound(
            f"the tag '{tag}' matches several GGUF files in {repo}: {shown}; "
            "use a more specific tag"
        )
    raise ModelNotFound(
        f"no GGUF file in {repo} carries the quantization '{wanted}'; its GGUF files: {shown}"
    )
