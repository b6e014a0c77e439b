"""The server started inside `gguf-serve run` when none answers at the configured address.

It is the same application `gguf-serve serve` runs, on a Unix socket in a private temporary
directory instead of a TCP port: nothing else on the machine can reach it, no port can clash,
and the chat goes through the same routes as with a separate server. It lives as long as the
chat and takes its model down with it.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from server.errors import GGUFServeError
from server.settings import Settings

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


@contextmanager
def in_process_server(settings: Settings) -> Iterator[httpx.HTTPTransport]:
    """Serve `settings` on a private Unix socket; yields a transport that reaches it.

    Raises GGUFServeError when the server does not start.
    """
    import uvicorn  # the server's modules load only when a chat needs them here

    from server.app import create_app

    level = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="gguf-serve-run-") as folder:
        socket_path = str(Path(folder) / "api.sock")
        config = uvicorn.Config(
            create_app(settings, preload=False),
            uds=socket_path,
            log_level="debug" if settings.log_level == "debug" else "warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        # uvicorn installs no signal handlers off the main thread: Ctrl-C stays with the chat.
        thread = threading.Thread(target=server.run, name="gguf-serve-inprocess", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise GGUFServeError("the in-process server did not start")
            time.sleep(0.02)
        try:
            yield httpx.HTTPTransport(uds=socket_path)
        finally:
            server.should_exit = True
            thread.join(_STOP_TIMEOUT_S)
