"""Per-request llama.cpp sampler chains (the order follows llama-server's default)."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np

from server.engine.types import SamplingParams
from server.errors import InvalidRequest

_NO_SEED = llama_cpp.LLAMA_DEFAULT_SEED


def _grammar_sampler(vocab: Any, grammar: str, triggers: tuple[str, ...]) -> Any:
    if not triggers:
        return llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, grammar.encode(), b"root", patterns, len(triggers), None, 0
    )


class Sampler:
    """One sampler chain: bias, grammar, penalties, top-k/typical/top-p/min-p, temperature, dist."""

    __slots__ = (
        "_argmax",
        "_bias_ids",
        "_bias_values",
        "_candidates",
        "_grammar",
        "_n_vocab",
        "_one",
        "_penalties",
        "chain",
    )

    def __init__(self, params: SamplingParams, vocab: Any, n_vocab: int) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain = chain
        self._n_vocab = n_vocab
        self._penalties: Any = None
        self._grammar: Any = None  # kept out of the chain: checked after sampling (see sample)
        self._candidates: Any = None
        self._one: Any = None  # a one-token array for the grammar check
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
        if params.grammar and any(b == float("-inf") for _, b in params.logit_bias):
            llama_cpp.llama_sampler_free(chain)  # a finished grammar would leave no valid token
            raise InvalidRequest("ignore_eos cannot be combined with a grammar", param="ignore_eos")
        try:
            self._build(params, vocab, n_vocab)
        except BaseException:
            self.free()
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
            grammar = _grammar_sampler(vocab, p.grammar, p.grammar_triggers)
            if not grammar:
                raise InvalidRequest("the grammar could not be parsed", param="grammar")
            self._grammar = grammar
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
        if self._grammar is not None:
            return self._sample_constrained(ctx, index)
        return int(llama_cpp.llama_sampler_sample(self.chain, ctx, index))

    def _sample_constrained(self, ctx: Any, index: int) -> int:
        """Sample freely, keep the token if the grammar allows it, else resample under it.

        Checking one token costs microseconds where masking the whole vocabulary costs
        milliseconds, and the model mostly agrees with its grammar (llama.cpp's common sampler
        does the same).
        """
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), (self._n_vocab,))
        token = self._apply(logits, first=None)
        if self._one is None:
            self._one = _CandidateArray(1)
        one = self._one
        one.reset(np.ones(1, dtype=np.float32))
        one.data["id"][0] = token
        llama_cpp.llama_sampler_apply(self._grammar, one.ref)
        if one.data["logit"][0] == -np.inf:
            token = self._apply(logits, first=self._grammar)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def _apply(self, logits: Any, first: Any) -> int:
        """Run the chain (after `first`, if given) over fresh candidates; the selected id."""
        if self._candidates is None:
            self._candidates = _CandidateArray(self._n_vocab)
        cand = self._candidates
        cand.reset(logits)
        if first is not None:
            llama_cpp.llama_sampler_apply(first, cand.ref)
        llama_cpp.llama_sampler_apply(self.chain, cand.ref)
        arr = cand.array
        return int(arr.data[arr.selected].id)

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class _CandidateArray:
    """A llama_token_data_array over a numpy buffer (filled from logits without Python loops)."""

    __slots__ = ("array", "data", "ids", "ref")

    def __init__(self, n: int) -> None:
        self.data = np.zeros(n, dtype=_TOKEN_DATA)
        self.ids = np.arange(n, dtype=np.int32)
        self.data["id"] = self.ids
        pointer = self.data.ctypes.data_as(llama_cpp.llama_token_data_p)
        self.array = llama_cpp.llama_token_data_array(pointer, n, -1, False)
        self.ref = ctypes.byref(self.array)

    def reset(self, logits: Any) -> None:
        data = self.data
        data["id"] = self.ids  # samplers sort candidates in place
        data["logit"] = logits
        data["p"] = 0.0
        arr = self.array
        arr.data = data.ctypes.data_as(llama_cpp.llama_token_data_p)  # type: ignore[assignment]
        arr.size = len(data)
        arr.selected = -1
        arr.sorted = False
