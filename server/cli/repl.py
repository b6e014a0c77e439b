"""The interactive chat of `gguf-serve run`: `>>>` prompts, streamed answers, slash commands.

Line editing and history come from GNU readline (Python's `readline` module), as in any shell
prompt; a message that starts with `\"\"\"` goes on over several lines until one ends with `\"\"\"`.
Ctrl-C stops an answer (or clears the line being typed), Ctrl-D or `/bye` leaves.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TextIO

from server.cli.client import ServerClient
from server.cli.commands import Commands
from server.cli.session import ChatSession
from server.cli.turn import print_stats, stream_turn, terminal_writer
from server.errors import GGUFServeError

logger = logging.getLogger(__name__)

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
_HISTORY_LENGTH = 1000


class LineReader:
    """`input()` with readline editing, and a history file shared by every chat."""

    def __init__(self, history_file: Path | None) -> None:
        try:
            import readline
        except ImportError:  # not every Python is built with it; input() still works
            self._readline = None
        else:
            self._readline = readline
        self._file = history_file
        self.history = history_file is not None
        if self._readline is not None and history_file is not None:
            self._readline.set_history_length(_HISTORY_LENGTH)
            with contextlib.suppress(OSError):  # no history yet
                self._readline.read_history_file(history_file)

    def read(self, prompt: str) -> str:
        """One line; raises EOFError on Ctrl-D and KeyboardInterrupt on Ctrl-C."""
        line = input(prompt)
        if self._readline is not None and self._file is not None and self.history and line:
            try:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                self._file.touch(exist_ok=True)
                self._readline.append_history_file(1, self._file)
            except OSError as exc:
                logger.debug("cannot write the history file %s: %s", self._file, exc)
        return line

    def set_history(self, enabled: bool) -> None:
        self.history = enabled
        if self._readline is not None:
            self._readline.set_auto_history(enabled)


def read_message(reader: LineReader) -> tuple[str, bool]:
    """The next message and whether it is a slash command; `\"\"\"` starts a multi-line one."""
    line = reader.read(PROMPT)
    if not line.startswith(FENCE):
        text = line.strip()
        return text, text.startswith("/")
    rest = line[len(FENCE) :]
    if rest.endswith(FENCE) and len(rest) >= len(FENCE):
        return rest[: -len(FENCE)], False
    lines = [rest] if rest else []
    while True:
        line = reader.read(CONTINUATION)
        if line.endswith(FENCE):
            lines.append(line[: -len(FENCE)])
            return "\n".join(lines).strip("\n"), False
        lines.append(line)


class Repl:
    """The chat loop over one client and one session."""

    def __init__(
        self,
        client: ServerClient,
        session: ChatSession,
        reader: LineReader,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.client = client
        self.session = session
        self.reader = reader
        self.out = out
        self.err = err
        self.commands = Commands(client, session, self._echo, reader.set_history)

    def _echo(self, text: str) -> None:
        self.out.write(text + "\n\n")
        self.out.flush()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def run(self) -> None:
        """Until /bye or Ctrl-D."""
        while True:
            try:
                text, is_command = read_message(self.reader)
            except KeyboardInterrupt:
                self._write("\nUse Ctrl + d or /bye to exit.\n\n")
                continue
            except EOFError:
                self._write("\n")
                return
            if not text:
                continue
            if is_command:
                if not self.commands.run(text):
                    return
                continue
            self._turn(text)

    def _turn(self, text: str) -> None:
        write, flush = terminal_writer(self.out, wrap=self.session.wordwrap)
        try:
            reply = stream_turn(self.client, self.session.request(text), write)
        except GGUFServeError as exc:
            flush()
            self._write("\n")
            self.err.write(f"error: {exc.message}\n\n")
            self.err.flush()
            return
        flush()
        self._write("\n" if reply.text.endswith("\n") else "\n\n")
        if reply.text:  # an answer stopped before any text is forgotten with its question
            self.session.remember(text, reply.text)
        if self.session.verbose and reply.stats:
            print_stats(reply.stats, self.err)
            self.err.write("\n")
            self.err.flush()
