"""Per-request llama.cpp sampler chains (the order follows llama-server's default)."""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy as np

from server.engine.types import SamplingParams
from server.errors import InvalidRequest

_NO_SEED = llama_cpp.LLAMA_DEFAULT_SEED


class Sampler:
    """One sampler chain: bias, grammar, penalties, top-k/typical/top-p/min-p, temperature, dist."""

    __slots__ = ("_argmax", "_bias_ids", "_bias_values", "_n_vocab", "_penalties", "chain")

    def __init__(self, params: SamplingParams, vocab: Any, n_vocab: int) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain = chain
        self._n_vocab = n_vocab
        self._penalties: Any = None
        # Greedy without grammar or penalties is an argmax over the (biased) logits: numpy does it
        # in ~15 us where the chain first copies the whole vocabulary into candidates (~100 us).
        self._argmax = params.temperature <= 0.0 and not (
            params.grammar
            or params.repeat_penalty != 1.0
            or params.presence_penalty
            or params.frequency_penalty
        )
        self._bias_ids = np.array([t for t, _ in params.logit_bias], dtype=np.int64)
        self._bias_values = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        try:
            self._build(params, vocab, n_vocab)
        except BaseException:
            llama_cpp.llama_sampler_free(chain)
            raise

    def _add(self, sampler: Any) -> Any:
        llama_cpp.llama_sampler_chain_add(self.chain, sampler)
        return sampler

    def _build(self, p: SamplingParams, vocab: Any, n_vocab: int) -> None:
        if p.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))()
            for i, (token, bias) in enumerate(p.logit_bias):
                if not 0 <= token < n_vocab:
                    raise InvalidRequest(
                        f"logit_bias token id {token} is outside the vocabulary (0..{n_vocab - 1})",
                        param="logit_bias",
                    )
                biases[i] = llama_cpp.llama_logit_bias(token, bias)
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), biases))
        if p.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(vocab, p.grammar.encode(), b"root")
            if not grammar:
                raise InvalidRequest("the grammar could not be parsed", param="grammar")
            self._add(grammar)
        if p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
            self._penalties = self._add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    p.repeat_last_n,
                    p.repeat_penalty,
                    p.frequency_penalty,
                    p.presence_penalty,
                )
            )
        if p.temperature <= 0.0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if p.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if 0.0 < p.typical_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_typical(p.typical_p, 1))
        if 0.0 < p.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(p.temperature))
        seed = _NO_SEED if p.seed is None else p.seed & 0xFFFFFFFF
        self._add(llama_cpp.llama_sampler_init_dist(seed))

    def prime(self, prompt_tokens: list[int], last_n: int) -> None:
        """Let the repetition penalties see the end of the prompt, as llama-server does."""
        if self._penalties is None or last_n == 0:
            return
        window = prompt_tokens if last_n < 0 else prompt_tokens[-last_n:]
        for token in window:
            llama_cpp.llama_sampler_accept(self._penalties, token)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from output row `index` of the last decode."""
        if self._argmax:
            ptr = llama_cpp.llama_get_logits_ith(ctx, index)
            logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
            if self._bias_ids.size:
                logits = logits.copy()
                logits[self._bias_ids] += self._bias_values
            return int(logits.argmax())
        return int(llama_cpp.llama_sampler_sample(self.chain, ctx, index))

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)
