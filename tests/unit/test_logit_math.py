"""Per-token arithmetic of the scorer, against float64 references computed independently."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from server.engine.logit_math import TopK, kld_top_k, log_normalizer, score_rows, top_k

Array = np.ndarray[Any, Any]


def _logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> Array:
    return (np.random.default_rng(seed).standard_normal((rows, vocab)) * scale).astype(np.float32)


def _log_softmax(x: Array) -> Array:
    x = x.astype(np.float64)
    peak = x.max(axis=1, keepdims=True)
    return np.asarray(x - peak - np.log(np.exp(x - peak).sum(axis=1, keepdims=True)))


def _exact_kld(ref: Array, model: Array) -> Array:
    p, q = _log_softmax(ref), _log_softmax(model)
    return np.asarray((np.exp(p) * (p - q)).sum(axis=1))


def test_nll_is_the_negative_log_softmax_of_the_target() -> None:
    logits = _logits(7, 50, seed=1)
    targets = np.array([0, 3, 49, 7, 7, 20, 1])
    scores = score_rows(logits, targets)
    expected = -_log_softmax(logits)[np.arange(7), targets]
    np.testing.assert_allclose(scores.nll, expected, rtol=1e-6)
    assert scores.kld is None and scores.same_top is None and scores.top is None


def test_log_normalizer_survives_huge_logits() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32)
    assert log_normalizer(logits)[0] == pytest.approx(1000.0 + np.log(2.0))


def test_top_k_is_sorted_and_breaks_ties_by_lower_id() -> None:
    logits = np.array([[0.0, 5.0, 1.0, 5.0, 3.0, -2.0]], dtype=np.float32)
    top = top_k(logits, log_normalizer(logits), 4)
    assert top.ids.tolist() == [[1, 3, 4, 2]]
    np.testing.assert_allclose(top.logprobs[0], _log_softmax(logits)[0, [1, 3, 4, 2]], rtol=1e-6)
    full = top_k(logits, log_normalizer(logits), 99)  # k above the vocabulary: all of it
    assert full.ids.tolist() == [[1, 3, 4, 2, 0, 5]]


def test_kld_with_the_whole_vocabulary_is_exact() -> None:
    ref, model = _logits(5, 40, seed=2), _logits(5, 40, seed=3)
    top = top_k(ref, log_normalizer(ref), 40)
    got = kld_top_k(model, log_normalizer(model), top)
    np.testing.assert_allclose(got, _exact_kld(ref, model), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [1, 4, 16, 39])
def test_top_k_kld_is_a_lower_bound_that_grows_with_k(k: int) -> None:
    ref = _logits(20, 40, seed=4)
    model = ref + _logits(20, 40, seed=5, scale=0.5)
    exact = _exact_kld(ref, model)
    got = kld_top_k(model, log_normalizer(model), top_k(ref, log_normalizer(ref), k))
    more = kld_top_k(model, log_normalizer(model), top_k(ref, log_normalizer(ref), k + 1))
    assert np.all(got >= -1e-9)
    assert np.all(got <= exact + 1e-6)
    assert np.all(more >= got - 1e-6)


def test_a_model_against_its_own_top_k_has_zero_kld_and_the_same_top() -> None:
    logits = _logits(9, 100, seed=6)
    top = top_k(logits, log_normalizer(logits), 8)
    scores = score_rows(logits, np.zeros(9, dtype=np.int64), top, keep_top=8)
    assert scores.kld is not None and scores.same_top is not None and scores.top is not None
    np.testing.assert_allclose(scores.kld, 0.0, atol=1e-6)
    assert scores.same_top.all()
    np.testing.assert_array_equal(scores.top.ids, top.ids)


def test_same_top_compares_the_most_likely_tokens() -> None:
    # the reference ranks token 1 first in row 0 and token 0 in row 1
    model = np.array([[0.0, 8.0, 1.0], [0.0, 5.0, 1.0]], dtype=np.float32)
    top = TopK(np.array([[1, 2], [0, 2]], dtype=np.int32), np.zeros((2, 2), dtype=np.float32))
    scores = score_rows(model, np.array([1, 1]), top)
    assert scores.same_top is not None
    assert scores.same_top.tolist() == [True, False]
