"""Memory a model needs at a context length and KV type, for `compare` and `recommend`.

INTERIM: the memory planner (`engine/memory.py`, issue 12) owns this arithmetic. Until it
lands, `memory_at_context` is a plain estimate for dense attention models: weights (the GGUF's
tensor bytes) + KV cache (layers * context * KV heads * head size * bytes per element of each
type) + llama.cpp's CPU compute buffer, which is dominated by one logits row per micro-batch
token (n_vocab * n_ubatch * 4 bytes; 98.25 MiB measured for the default model against 96 MiB
from this term). Swapping in the planner changes this module only.
"""

from __future__ import annotations

import re
from pathlib import Path

from server.registry import GGUFInfo

# Bytes per element of each KV cache type (ggml block size / elements per block).
KV_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}
N_UBATCH = 512
_MEMINFO = Path("/proc/meminfo")


def _meta_int(info: GGUFInfo, key: str) -> int | None:
    value = info.metadata.get(f"{info.architecture}.{key}")
    if isinstance(value, list) and value:
        value = max(value)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, type_k: str, type_v: str) -> int:
    """KV cache bytes for `n_ctx` cells (all sequences together)."""
    layers = info.block_count or 0
    heads = info.head_count or 1
    kv_heads = info.head_count_kv or heads
    embd = info.embedding_length or 0
    head_k = _meta_int(info, "attention.key_length") or embd // heads
    head_v = _meta_int(info, "attention.value_length") or embd // heads
    per_cell = kv_heads * (head_k * KV_BYTES[type_k] + head_v * KV_BYTES[type_v])
    return int(layers * n_ctx * per_cell)


def vocab_size(info: GGUFInfo) -> int:
    return _meta_int(info, "vocab_size") or info.array_lengths.get("tokenizer.ggml.tokens", 0)


def memory_at_context(info: GGUFInfo, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
    """Bytes to run the model with one sequence of `n_ctx` tokens (interim estimate, see above)."""
    compute = vocab_size(info) * min(N_UBATCH, n_ctx) * 4
    return info.tensor_bytes + kv_cache_bytes(info, n_ctx, type_k, type_v) + compute


def available_memory() -> int | None:
    """The memory the kernel says new work can use (MemAvailable), or None where unknown."""
    try:
        text = _MEMINFO.read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None
