"""Turning a stream of token bytes into safe text deltas: UTF-8 and stop strings."""

from __future__ import annotations

import codecs


class TextStream:
    """Incremental detokenizer for one request.

    Never emits a partial UTF-8 character (bytes wait until the character completes), and holds
    back any tail that could still become a stop string, so stops spanning tokens are caught
    and never sent.
    """

    __slots__ = ("_decoder", "_held", "_max_stop", "_stops", "stopped")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._max_stop = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Feed one token's bytes; return the text that is now safe to send."""
        text = self._decoder.decode(data)
        if not self._stops:
            return text
        held = self._held + text
        cut = -1
        for stop in self._stops:
            i = held.find(stop)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.stopped = True
            self._held = ""
            return held[:cut]
        keep = self._partial_stop_len(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep] if keep else held

    def flush(self) -> str:
        """Everything still held (at the end of generation, when no stop can follow)."""
        rest = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return rest

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        longest = 0
        upto = min(len(text), self._max_stop - 1)
        for stop in self._stops:
            for k in range(min(upto, len(stop) - 1), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
