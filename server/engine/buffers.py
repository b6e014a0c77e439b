"""Bytes of the buffers llama.cpp allocates for a context: KV cache, compute, output.

The KV cache is exact arithmetic after llama.cpp (src/llama-kv-cache.cpp, llama-kv-cache-iswa.cpp,
llama-memory-recurrent.cpp, llama-context.cpp). The compute buffer is what ggml's graph allocator
reserves for the worst-case batch, which depends on how it reuses memory between the graph's
nodes; the formula below has the shape of that graph (attention masks, attention scores when
flash attention is off, the feed-forward activations, the logits) and coefficients fitted to
llama.cpp's own reports (docs/MEMORY.md, "compute buffers").
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from server.engine.hparams import ModelShape

PAD = 256  # llama.cpp pads n_ctx, n_ctx_seq and the SWA cache to multiples of 256
F32 = 4
# Fitted per-token activation widths, in n_embd / n_ff units of f32 (docs/MEMORY.md).
ATTN_EMBD = 6.0  # attention stage without the scores: Q, K, V, output, residual
FFN_FF = 4.0  # feed-forward stage: gate, up and their product live together
FFN_EMBD = 1.5
# Host memory llama.cpp holds beside the buffers: vocabulary tables per token or merge,
# plus a fixed part (graph, contexts, thread pool). Measured on the default model.
VOCAB_ENTRY_BYTES = 150
RUNTIME_BYTES = 4 << 20


def pad(n: int, to: int = PAD) -> int:
    return (n + to - 1) // to * to


def row_bytes(type_name: str, n: int) -> int:
    """Bytes of `n` elements of a ggml type (ggml_row_size)."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name.upper()]]
    return -(-n // block) * size


@dataclass(frozen=True)
class ContextShape:
    """The context parameters that size the buffers, after llama.cpp's own adjustments."""

    n_ctx_seq: int  # cells per sequence (padded)
    n_seq: int  # sequences, one KV stream each (kv_unified off)
    n_tokens: int  # tokens of the worst-case batch llama.cpp reserves for (n_ubatch, capped)
    n_outputs: int  # logits rows of that batch
    flash_attn: bool
    type_k: str
    type_v: str
    swa_full: bool


def context_shape(
    *,
    n_ctx: int,
    n_parallel: int,
    n_batch: int,
    n_ubatch: int,
    n_outputs: int,
    flash_attn: bool,
    type_k: str,
    type_v: str,
    swa_full: bool,
) -> ContextShape:
    """What llama_context makes of these parameters (n_ctx is per slot, as LoadOptions has it)."""
    total = pad(n_ctx * n_parallel)
    per_seq = pad(total // n_parallel)
    total = per_seq * n_parallel
    batch = min(total, n_batch)
    tokens = min(batch, n_ubatch)
    return ContextShape(
        n_ctx_seq=per_seq,
        n_seq=n_parallel,
        n_tokens=tokens,
        n_outputs=min(tokens, max(n_outputs, 1)),
        flash_attn=flash_attn,
        type_k=type_k,
        type_v=type_v,
        swa_full=swa_full,
    )


def swa_cells(shape: ModelShape, ctx: ContextShape) -> int:
    """Cells per sequence of the sliding-window cache (llama_kv_cache_iswa)."""
    if ctx.swa_full:
        return ctx.n_ctx_seq
    return pad(min(ctx.n_ctx_seq, shape.n_swa + ctx.n_tokens))


def layer_cells(shape: ModelShape, ctx: ContextShape, il: int) -> int:
    layer = shape.attention[il]
    if layer is None:
        return 0
    return swa_cells(shape, ctx) if layer.swa else ctx.n_ctx_seq


def kv_layer_bytes(shape: ModelShape, ctx: ContextShape, il: int) -> tuple[int, int]:
    """K and V bytes of layer `il`'s cache, every sequence included."""
    layer = shape.attention[il]
    if layer is None:
        return 0, 0
    cells = layer_cells(shape, ctx, il) * ctx.n_seq
    v_width = layer.v_width
    if not ctx.flash_attn and layer.v_width:  # transposed V is padded to the widest layer
        v_width = max(a.v_width for a in shape.attention if a is not None)
    return cells * row_bytes(ctx.type_k, layer.k_width), cells * row_bytes(ctx.type_v, v_width)


def recurrent_layer_bytes(shape: ModelShape, ctx: ContextShape) -> int:
    """One recurrent layer's state (f32 conv and state rows) for every sequence."""
    return shape.recurrent_row * F32 * max(1, ctx.n_seq)


def compute_bytes(shape: ModelShape, ctx: ContextShape, *, output: bool = True) -> int:
    """The compute buffer of a device that runs attention layers (and the output if `output`).

    The largest of three stages of the worst-case batch: attention (masks, plus the KQ scores
    when flash attention is off), feed-forward, and logits.
    """
    t = ctx.n_tokens
    mask_bytes = 2 if ctx.flash_attn else F32
    caches = set()
    for layer in shape.attention:
        if layer is not None:
            caches.add(layer.swa)
    n_kv = {swa: swa_cells(shape, ctx) if swa else ctx.n_ctx_seq for swa in caches}
    masks = sum(n_kv.values()) * t * mask_bytes
    scores = 0 if ctx.flash_attn or not n_kv else max(n_kv.values()) * t * shape.n_head * F32
    attention = masks + scores + int(t * F32 * ATTN_EMBD * shape.n_embd)
    ffn = masks + int(t * F32 * (FFN_FF * shape.n_ff + FFN_EMBD * shape.n_embd))
    logits = F32 * (shape.n_vocab * ctx.n_outputs + 2 * shape.n_embd * t) if output else 0
    return max(attention, ffn, logits)


def output_bytes(shape: ModelShape, ctx: ContextShape) -> int:
    """llama.cpp's output buffer: one row of logits per output (host memory)."""
    return shape.n_vocab * max(ctx.n_outputs, ctx.n_seq) * F32


def host_runtime_bytes(vocab_entries: int) -> int:
    """Host memory beside the buffers: vocabulary tables and the fixed runtime part."""
    return vocab_entries * VOCAB_ENTRY_BYTES + RUNTIME_BYTES
