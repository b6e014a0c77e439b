"""A model's shape per layer, read from its GGUF header the way llama.cpp reads it.

What the memory plan needs and the header does not say in one number: which layers keep a KV
cache and how wide (per-layer KV head counts, key/value lengths, MLA), which of them use a
sliding window (llama.cpp hard-codes the pattern per architecture: `load_swa_pattern` in
src/models/*.cpp), which hold a recurrent state instead (Mamba, RWKV, hybrids), and which share
another layer's cache or are draft (MTP) layers the main context never attends. Architectures
not listed get the conservative reading: every layer a full-size attention layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.registry.gguf_info import GGUFInfo

SwaType = Literal["none", "standard", "chunked"]

# arch -> (pattern, dense_first, window when the header names none (None: no window then)).
# From llama.cpp src/models/<arch>.cpp: load_swa_pattern(ml, pattern, dense_first).
_SWA: dict[str, tuple[int, bool, int | None]] = {
    "gemma2": (2, False, 4096),
    "gemma3": (6, False, None),
    "gemma3n": (5, False, None),
    "gemma4": (6, False, None),
    "cohere2": (4, False, None),
    "cohere2moe": (4, True, None),
    "exaone4": (4, False, None),
    "exaone-moe": (4, False, None),
    "olmo2": (4, False, None),
    "gpt-oss": (2, False, None),
    "llama4": (4, False, 8192),
    "afmoe": (4, False, None),
    "plamo3": (8, False, None),
    "mellum": (4, False, None),
    "smallthinker": (4, True, None),
}
_CHUNKED = frozenset({"llama4"})
RECURRENT_ARCHS = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# Hybrids: attention layers and recurrent layers; which is which, per llama.cpp.
_HYBRID_BY_KV_HEADS = frozenset(
    {"jamba", "plamo2", "granitehybrid", "lfm2", "lfm2moe", "kimi-linear", "bailingmoe3"}
)
_HYBRID_BY_INTERVAL = frozenset({"qwen3next", "qwen35", "qwen35moe", "minimax-01"})
_HYBRID_NEMOTRON = frozenset({"nemotron_h", "nemotron_h_moe"})
_HYBRID_BOTH = frozenset({"falcon-h1"})  # every layer has attention and a recurrent state
_SHARED_KV_FROM = {"gemma3n": 20}  # llama.cpp: layers from this index reuse earlier caches


@dataclass(frozen=True)
class AttentionLayer:
    """One layer's KV cache row: elements per token for K and V (V is 0 for MLA)."""

    k_width: int
    v_width: int
    swa: bool


@dataclass(frozen=True)
class ModelShape:
    """The facts of a model that size its memory, per layer."""

    arch: str
    n_layer: int  # every block, draft (MTP) layers included
    n_embd: int
    n_vocab: int
    n_head: int  # largest per-layer count
    n_ff: int  # widest feed-forward activation per token (MoE: experts used x expert width)
    attention: tuple[AttentionLayer | None, ...]  # None: no KV cache of its own at this layer
    recurrent: tuple[bool, ...]  # layers holding a recurrent state
    recurrent_row: int  # f32 elements of one sequence's recurrent state, per recurrent layer
    n_swa: int
    swa_type: SwaType
    mla: bool
    n_ctx_train: int
    notes: tuple[str, ...] = ()

    @property
    def kv_layers(self) -> int:
        return sum(1 for layer in self.attention if layer is not None)

    @property
    def recurrent_layers(self) -> int:
        return sum(self.recurrent)


def model_shape(info: GGUFInfo) -> ModelShape:
    """The per-layer shape of the model described by `info` (header facts only)."""
    meta = _Meta(info.metadata, info.architecture)
    arch = info.architecture
    n_layer = info.block_count or len(info.tensor_sizes.layers)
    n_embd = info.embedding_length or 0
    n_nextn = meta.num("nextn_predict_layers")
    n_main = n_layer - n_nextn
    heads = meta.per_layer("attention.head_count", n_layer)
    kv_heads = meta.per_layer("attention.head_count_kv", n_layer, fallback=heads)
    ff = meta.per_layer("feed_forward_length", n_layer)
    notes: list[str] = []

    head_k = meta.num("attention.key_length", _div(n_embd, max(heads, default=0)))
    head_v = meta.num("attention.value_length", _div(n_embd, max(heads, default=0)))
    head_k_swa = meta.num("attention.key_length_swa", head_k)
    head_v_swa = meta.num("attention.value_length_swa", head_v)
    mla = meta.num("attention.key_length_mla") > 0 and meta.num("attention.value_length_mla") > 0

    swa_flags, n_swa, swa_type = _swa(meta, arch, n_main, n_layer)
    recurrent = _recurrent_flags(meta, arch, n_layer, n_main, kv_heads, ff)
    shared_from = _SHARED_KV_FROM.get(arch)
    if meta.num("attention.shared_kv_layers"):
        shared_from = n_layer - meta.num("attention.shared_kv_layers")

    attention: list[AttentionLayer | None] = []
    for il in range(n_layer):
        attends = kv_heads[il] > 0 and (arch in _HYBRID_BOTH or not recurrent[il])
        if arch in _HYBRID_NEMOTRON:
            attends = kv_heads[il] > 0 and ff[il] == 0
        own_cache = (shared_from is None or il < shared_from) and (n_nextn == 0 or il < n_main)
        if arch in RECURRENT_ARCHS or not attends or not own_cache:
            attention.append(None)
            continue
        swa = swa_flags[il]
        k = (head_k_swa if swa else head_k) * kv_heads[il]
        v = 0 if mla else (head_v_swa if swa else head_v) * kv_heads[il]
        attention.append(AttentionLayer(k_width=k, v_width=v, swa=swa))
    if mla:
        notes.append("MLA: one compressed K row per token, no V cache")
    row = _recurrent_row(meta, n_embd) if any(recurrent) else 0
    if shared_from is not None and shared_from < n_layer:
        notes.append(f"layers {shared_from}-{n_layer - 1} reuse the caches of earlier layers")

    return ModelShape(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=_vocab_size(info, meta),
        n_head=max(heads, default=0),
        n_ff=_ff_width(meta, ff),
        attention=tuple(attention),
        recurrent=tuple(recurrent),
        recurrent_row=row,
        n_swa=n_swa,
        swa_type=swa_type,
        mla=mla,
        n_ctx_train=info.context_length or 0,
        notes=tuple(notes),
    )


class _Meta:
    """`<arch>.<key>` lookups in the header metadata."""

    def __init__(self, metadata: dict[str, Any], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def raw(self, key: str) -> Any:
        return self.metadata.get(f"{self.arch}.{key}")

    def num(self, key: str, default: int = 0) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return default
        return int(value)

    def per_layer(self, key: str, n: int, fallback: Sequence[int] | None = None) -> list[int]:
        """A per-layer count given as one number or an array (llama.cpp's get_key_or_arr)."""
        value = self.raw(key)
        if isinstance(value, list) and len(value) >= n:
            return [int(v) for v in value[:n]]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [int(value)] * n
        return list(fallback) if fallback is not None else [0] * n


def _div(a: int, b: int) -> int:
    return a // b if b else 0


def _swa(meta: _Meta, arch: str, n_main: int, n_layer: int) -> tuple[list[bool], int, SwaType]:
    """Which layers use the sliding window, the window, and its kind."""
    none: tuple[list[bool], int, SwaType] = ([False] * n_layer, 0, "none")
    rule = _SWA.get(arch)
    if rule is None:
        return none
    pattern, dense_first, default_window = rule
    window = meta.num("attention.sliding_window", default_window or 0)
    if window <= 0:
        return none
    flags = meta.raw("attention.sliding_window_pattern")
    if isinstance(flags, list) and len(flags) >= n_main:
        is_swa = [bool(f) for f in flags[:n_main]]
    else:
        n = meta.num("attention.sliding_window_pattern", pattern)
        if dense_first:
            is_swa = [n == 0 or il % n != 0 for il in range(n_main)]
        else:
            is_swa = [n == 0 or il % n < n - 1 for il in range(n_main)]
    is_swa += [False] * (n_layer - n_main)
    return is_swa, window, "chunked" if arch in _CHUNKED else "standard"


def _recurrent_flags(
    meta: _Meta, arch: str, n_layer: int, n_main: int, kv_heads: list[int], ff: list[int]
) -> list[bool]:
    if arch in RECURRENT_ARCHS:
        return [True] * n_layer
    if arch in _HYBRID_BOTH:
        return [True] * n_main + [False] * (n_layer - n_main)
    if arch in _HYBRID_BY_KV_HEADS:
        return [kv_heads[il] == 0 for il in range(n_layer)]
    if arch in _HYBRID_NEMOTRON:
        return [il < n_main and kv_heads[il] == 0 and ff[il] == 0 for il in range(n_layer)]
    if arch in _HYBRID_BY_INTERVAL:
        given = meta.raw("attention.recurrent_layers")
        if isinstance(given, list) and len(given) >= n_layer:
            return [bool(v) for v in given[:n_layer]]
        interval = meta.num("full_attention_interval", 4) or 4
        return [il < n_main and (il + 1) % interval != 0 for il in range(n_layer)]
    return [False] * n_layer


def _recurrent_row(meta: _Meta, n_embd: int) -> int:
    """Elements of the conv (r) plus state (s) rows of one sequence (llama_hparams::n_embd_r/s)."""
    head = meta.num("wkv.head_size")
    if head:  # RWKV: token shift and wkv state
        return meta.num("token_shift_count", 2) * n_embd + n_embd * head
    l_cache = meta.num("shortconv.l_cache")
    if l_cache:  # LFM2 short convolutions
        return n_embd * (l_cache - 1)
    d_conv = meta.num("ssm.conv_kernel")
    d_inner = meta.num("ssm.inner_size")
    d_state = meta.num("ssm.state_size")
    n_group = meta.num("ssm.group_count")
    conv = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
    return conv + d_state * d_inner


def _ff_width(meta: _Meta, ff: list[int]) -> int:
    """The widest feed-forward activation per token: dense, or experts used plus shared ones."""
    dense = max(ff, default=0)
    used = meta.num("expert_used_count")
    if not used:
        return dense
    expert = meta.num("expert_feed_forward_length") or dense
    shared = meta.num("expert_shared_feed_forward_length") or (
        expert * meta.num("expert_shared_count")
    )
    return max(dense, used * expert + shared)


def _vocab_size(info: GGUFInfo, meta: _Meta) -> int:
    return (
        meta.num("vocab_size")
        or info.array_lengths.get("tokenizer.ggml.tokens", 0)
        or len(info.metadata.get("tokenizer.ggml.tokens") or [])
    )
