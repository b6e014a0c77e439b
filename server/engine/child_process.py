"""Starting an engine child process (engine/child.py) and relaying its log into ours."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import IO, Any

logger = logging.getLogger(__name__)

_LINE = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<name>[\w.]+): (?P<text>.*)$")


_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class ChildProcess:
    """One `python -m server.engine.child` with a pipe each way and its output relayed."""

    def __init__(self, label: str) -> None:
        self.label = label
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        try:
            # A session of its own: Ctrl-C in the terminal reaches the server, which then
            # closes the child in order; the child also exits when its pipe from us closes.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.engine.child", str(child_read), str(child_write)],
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # An abort (a lost rpc-server) prints one line, not a gdb backtrace.
                env={**os.environ, "GGML_NO_BACKTRACE": "1"},
            )
        finally:
            os.close(child_read)
            os.close(child_write)
        self.inbox = Connection(parent_read, writable=False)
        self.outbox = Connection(parent_write, readable=False)
        self._send_lock = threading.Lock()
        assert self.proc.stdout is not None
        self._relay = threading.Thread(
            target=self._relay_output, args=(self.proc.stdout,), daemon=True
        )
        self._relay.start()

    def send(self, message: Any) -> bool:
        """Send one message; False if the child is gone."""
        with self._send_lock:
            try:
                self.outbox.send(message)
                return True
            except OSError:
                return False

    def recv(self) -> Any:
        """The next message; raises EOFError once the child has exited."""
        try:
            return self.inbox.recv()
        except OSError as exc:
            raise EOFError(str(exc)) from None

    def exit_reason(self) -> str:
        """How the process ended, e.g. 'killed by SIGABRT' (waits for it)."""
        code = self.proc.wait()
        self._relay.join(timeout=5)
        if code < 0:
            import signal

            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to finish, then terminate it if it does not."""
        self.send(("close",))
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for conn in (self.inbox, self.outbox):
            with contextlib.suppress(OSError):
                conn.close()

    def _relay_output(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line:
                continue
            match = _LINE.match(line)
            if match:
                level = _LEVELS[match["level"]]
                name = match["name"] if match["name"].startswith("server") else __name__
                logging.getLogger(name).log(level, "[%s] %s", self.label, match["text"])
            else:  # llama.cpp / rpc client printing on its own (an abort says why here)
                logger.warning("[%s] %s", self.label, line)
