"""Header-complete synthetic GGUF models for memory tests (this module holds no tests).

`write_model` writes the metadata and the full tensor table of a llama-, gemma3- or MoE-shaped
model, then extends the file to its full length as a sparse file: the tensor data is zeros that
take no disk space, so a "7B" header costs a few hundred KB on disk. llama.cpp can load such a
file with `no_alloc` (its own dry run: sizes only), and `read_gguf_info` reads it like any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Shape:
    """The dimensions of a synthetic model."""

    arch: str = "llama"
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 8
    n_head_kv: int | list[int] = 2
    head_dim: int | None = None  # None: n_embd // n_head
    n_ff: int = 512
    n_vocab: int = 1000
    n_ctx_train: int = 8192
    weight_type: Q = Q.Q8_0
    tied: bool = False  # no output.weight (the token embedding is reused)
    sliding_window: int | None = None
    swa_pattern: int | list[bool] | None = None
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def tensor_bytes(kind: Q, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `kind` with `shape` (ne0 first), as ggml stores it."""
    block, size = gguf.GGML_QUANT_SIZES[kind]
    count = int(np.prod(shape))
    return count // block * size


def tensor_table(s: Shape) -> list[tuple[str, tuple[int, ...], Q]]:
    """(name, shape in ggml order, type) of every tensor of the model."""
    e, v = s.n_embd, s.n_vocab
    d = s.head_dim or (s.n_embd // s.n_head if s.n_head else 0)
    w, f32 = s.weight_type, Q.F32
    out: list[tuple[str, tuple[int, ...], Q]] = [
        ("token_embd.weight", (e, v), w),
        ("output_norm.weight", (e,), f32),
    ]
    if not s.tied:
        out.append(("output.weight", (e, v), w))
    kv_heads = s.n_head_kv if isinstance(s.n_head_kv, list) else [s.n_head_kv] * s.n_layer
    for i in range(s.n_layer):
        b = f"blk.{i}."
        hkv = kv_heads[i]
        out.append((b + "attn_norm.weight", (e,), f32))
        if s.n_head and hkv:
            out += [
                (b + "attn_q.weight", (e, s.n_head * d), w),
                (b + "attn_k.weight", (e, hkv * d), w),
                (b + "attn_v.weight", (e, hkv * d), w),
                (b + "attn_output.weight", (s.n_head * d, e), w),
            ]
        out.append((b + "ffn_norm.weight", (e,), f32))
        if s.arch == "gemma3":
            out += [
                (b + "attn_q_norm.weight", (d,), f32),
                (b + "attn_k_norm.weight", (d,), f32),
                (b + "post_attention_norm.weight", (e,), f32),
                (b + "post_ffw_norm.weight", (e,), f32),
            ]
        if s.n_expert:
            fe = s.n_ff_exp or s.n_ff
            out += [
                (b + "ffn_gate_inp.weight", (e, s.n_expert), f32),
                (b + "ffn_gate_exps.weight", (e, fe, s.n_expert), w),
                (b + "ffn_up_exps.weight", (e, fe, s.n_expert), w),
                (b + "ffn_down_exps.weight", (fe, e, s.n_expert), w),
            ]
        else:
            out += [
                (b + "ffn_gate.weight", (e, s.n_ff), w),
                (b + "ffn_up.weight", (e, s.n_ff), w),
                (b + "ffn_down.weight", (s.n_ff, e), w),
            ]
    return out


def write_model(path: Path, s: Shape) -> Path:
    """Write the GGUF described by `s` to `path` (sparse tensor data); returns `path`."""
    writer = gguf.GGUFWriter(path, s.arch)
    a = s.arch
    writer.add_name(f"synthetic-{a}")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if s.head_dim is not None:
        writer.add_key_length(s.head_dim)
        writer.add_value_length(s.head_dim)
    if s.sliding_window is not None:
        writer.add_sliding_window(s.sliding_window)
    if s.swa_pattern is not None:
        kind = gguf.GGUFValueType.ARRAY if isinstance(s.swa_pattern, list) else None
        sub = gguf.GGUFValueType.BOOL if kind is not None else None
        writer.add_key_value(
            f"{a}.attention.sliding_window_pattern",
            s.swa_pattern,
            kind or gguf.GGUFValueType.UINT32,
            sub_type=sub,
        )
    if s.n_expert:
        writer.add_expert_count(s.n_expert)
        writer.add_expert_used_count(s.n_expert_used)
        if s.n_ff_exp is not None:
            writer.add_expert_feed_forward_length(s.n_ff_exp)
    for key, value in s.extra.items():
        writer.add_key_value(key, value, _value_type(value))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(s.n_vocab)])
    writer.add_token_scores([0.0] * s.n_vocab)
    writer.add_token_types([1] * s.n_vocab)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    total = 0
    for name, shape, kind in tensor_table(s):
        nbytes = tensor_bytes(kind, shape)
        block, size = gguf.GGML_QUANT_SIZES[kind]
        # GGUFWriter wants the shape in numpy order and bytes for quantized types
        np_shape = list(reversed(shape))
        if kind not in (Q.F32, Q.F16):
            np_shape[-1] = np_shape[-1] // block * size
        dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(kind, np.uint8)
        writer.add_tensor_info(name, np_shape, np.dtype(dtype), nbytes, raw_dtype=kind)
        total += _pad(nbytes, writer.data_alignment)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as handle:  # where the data starts, then holes up to the end
        start = _pad(handle.seek(0, os.SEEK_END), writer.data_alignment)
        handle.truncate(start + total)
    return path


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    return gguf.GGUFValueType.STRING
