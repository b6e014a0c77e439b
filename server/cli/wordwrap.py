"""Streamed text wrapped at word boundaries for the terminal, as `ollama run` wraps it.

Text arrives a token at a time, so a word is held back until the whitespace after it shows where
it ends; then it goes on the current line if it fits and on a new line if not. Blanks are held
back too, and dropped where a line wraps, so no line ends or starts with the blank it broke at
(indentation after a newline of the text is kept). Widths are counted in terminal cells (wide
CJK characters take two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.cells import cell_len


class WordWrapper:
    """A `write` that wraps at `width` columns; `flush()` writes the word held back."""

    def __init__(self, write: Callable[[str], Any], width: int) -> None:
        self._write = write
        self._width = max(width, 10)
        self._column = 0
        self._word = ""
        self._blank = ""

    def write(self, text: str) -> None:
        out: list[str] = []
        for char in text:
            if char == "\n":
                out.append(self._place_word())
                out.append("\n")
                self._column = 0
                self._blank = ""
            elif char in " \t":
                out.append(self._place_word())
                self._blank += char
            else:
                self._word += char
        done = "".join(out)
        if done:
            self._write(done)

    def flush(self) -> None:
        """Write the word held back (at the end of an answer, or when it is interrupted)."""
        text = self._place_word()
        self._blank = ""
        if text:
            self._write(text)

    def _place_word(self) -> str:
        word, self._word = self._word, ""
        if not word:
            return ""
        blank, self._blank = self._blank, ""
        size = cell_len(word)
        if self._column > 0 and self._column + len(blank) + size > self._width:
            self._column = size % self._width  # a word longer than a line: the terminal folds it
            return "\n" + word
        self._column = (self._column + len(blank) + size) % (self._width + 1)
        return blank + word
