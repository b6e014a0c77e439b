"""Tokenizer calls on a llama vocab: thread-safe reads, cached token pieces."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from server.errors import InvalidRequest


class Tokenizer:
    """Tokenize / detokenize with one model's vocabulary.

    The vocab is read-only after load, so these calls are safe from any thread; the piece
    cache is a plain dict (single assignments are atomic under the GIL).
    """

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        pre = int(llama_cpp.llama_vocab_fim_pre(vocab))
        suf = int(llama_cpp.llama_vocab_fim_suf(vocab))
        mid = int(llama_cpp.llama_vocab_fim_mid(vocab))
        # Prefix, suffix and middle tokens, when the vocabulary can fill in the middle.
        self.fim = (pre, suf, mid) if min(pre, suf, mid) >= 0 else None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._eog_ids: tuple[int, ...] | None = None

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Token ids for `text`; a BOS already in the text is not doubled.

        Raises InvalidRequest for text that is not valid Unicode (an unpaired surrogate).
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # the HTTP edge refuses these first; never a 500
            raise InvalidRequest(
                f"the text holds an unpaired surrogate at character {exc.start}", param="prompt"
            ) from None
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buf, capacity, add_special, parse_special
        )
        if n < 0:  # cannot happen with this capacity, but the API allows it
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        tokens: list[int] = buf[:n]
        if add_special and len(tokens) >= 2 and tokens[0] == tokens[1] == self.bos and self.add_bos:
            del tokens[0]
        return tokens

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        value = buf.raw[:n]
        self._pieces[token] = value
        return value

    def detokenize(self, tokens: list[int]) -> str:
        """Text for `tokens`; invalid UTF-8 becomes U+FFFD."""
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """End-of-generation token (EOS, EOT, <|im_end|>, ...)?"""
        value = self._eog.get(token)
        if value is None:
            value = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            self._eog[token] = value
        return value

    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token id (scanned once, then cached)."""
        if self._eog_ids is None:
            self._eog_ids = tuple(
                t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)
            )
        return self._eog_ids

    def token_text(self, token: int) -> str:
        """The vocabulary text of a token, special tokens included (e.g. for chat templates)."""
        if token < 0:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""
