"""`gguf-serve run NAME [PROMPT]`: chat with a model in the terminal, as `ollama run` does.

It talks to the server at the configured host and port; when none answers it starts the same
application in-process for the length of the chat. A model not in the store is pulled first,
with the progress bar. With a prompt argument or piped input it answers once and prints only
the answer (for shell pipelines); otherwise it opens the interactive chat.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from server.cli.client import ServerClient
from server.cli.common import ConfigDirOption, HomeOption, PullView, app, fail, settings_for
from server.cli.repl import LineReader, Repl
from server.cli.session import ChatSession, parse_parameter
from server.cli.turn import print_stats, stream_turn, terminal_writer
from server.errors import ModelNotFound
from server.settings import Settings


@app.command()
def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name (pulled first if not in the store).")],
    prompt: Annotated[
        list[str] | None,
        typer.Argument(
            help="Answer this once and exit (piped stdin works too).", show_default=False
        ),
    ] = None,
    format_: Annotated[
        str | None,
        typer.Option("--format", help="Response format: json.", show_default=False),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print token counts, timings and tokens/s.")
    ] = False,
    keepalive: Annotated[
        str | None,
        typer.Option(
            "--keepalive", help="How long the model stays loaded (5m, 1h, -1).", show_default=False
        ),
    ] = None,
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter",
            "-p",
            help="NAME=VALUE, as `/set parameter` takes them (temperature=0, num_predict=64).",
            show_default=False,
        ),
    ] = None,
    nowordwrap: Annotated[
        bool, typer.Option("--nowordwrap", help="Do not wrap words at the terminal's width.")
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow plain http when pulling from a non-loopback host."),
    ] = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Chat with a model (a running server's, or one started in-process)."""
    if format_ not in (None, "json"):
        fail(f"invalid format '{format_}': only 'json' is supported", 2)
    options = _parameters(parameter or [])
    settings = settings_for(ctx, home, config_dir)
    piped = None if sys.stdin.isatty() else sys.stdin.read()
    text = "\n".join(part for part in (piped, " ".join(prompt or [])) if part and part.strip())
    if piped is not None and not text:
        fail("no prompt: the piped input was empty", 2)
    session = ChatSession(
        model=model,
        options=options,
        format=format_,
        keep_alive=keepalive,
        verbose=verbose,
        wordwrap=not nowordwrap and format_ is None,  # JSON stays as the model wrote it
    )
    stderr = Console(stderr=True)
    with connect(settings) as client:
        ensure_model(client, model, stderr, insecure=insecure)
        if text:
            one_shot(client, session, text)
            return
        with _spinner(stderr, "loading the model"):
            client.load(model, keepalive, session.options)
        history = settings.history_file
        Repl(client, session, LineReader(history), sys.stdout, sys.stderr).run()


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[ServerClient]:
    """A client of the server at host:port, or of one started here if nothing answers."""
    key = api_key(settings)
    client = ServerClient(f"http://{_client_host(settings.host)}:{settings.port}", api_key=key)
    try:
        if client.reachable():
            yield client
            return
    finally:
        client.close()
    from server.cli.inprocess import in_process_server

    with in_process_server(settings) as transport:
        local = ServerClient("http://localhost", api_key=key, transport=transport)
        try:
            yield local
        finally:
            local.close()


def ensure_model(client: ServerClient, model: str, console: Console, *, insecure: bool) -> None:
    """Pull `model` through the server when it does not have it (progress bar on stderr)."""
    try:
        client.show(model)
        return
    except ModelNotFound:
        pass
    with PullView(console) as view:
        client.pull(model, view.update, insecure=insecure)


def one_shot(client: ServerClient, session: ChatSession, text: str) -> None:
    """Answer once: only the answer on stdout; statistics (--verbose) on stderr."""
    write, flush = terminal_writer(sys.stdout, wrap=session.wordwrap)
    reply = stream_turn(client, session.request(text), write)
    flush()
    if not reply.text.endswith("\n"):
        sys.stdout.write("\n")
        sys.stdout.flush()
    if reply.interrupted:
        sys.exit(130)  # as a shell reports SIGINT
    if session.verbose:
        print_stats(reply.stats, sys.stderr)


def _parameters(given: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"invalid --parameter '{item}': use NAME=VALUE", 2)
        try:
            options[name.strip()] = parse_parameter(name.strip(), value.split())
        except ValueError as exc:
            fail(f"invalid --parameter: {exc}", 2)
    return options


def api_key(settings: Settings) -> str | None:
    """The first of the server's API keys (`api_keys` and `api_key_file`), if it has any."""
    return settings.api_keys[0] if settings.api_keys else None


def _client_host(host: str) -> str:
    """Where to connect for a listen address: a wildcard means this machine."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@contextlib.contextmanager
def _spinner(console: Console, what: str) -> Iterator[None]:
    if console.is_terminal:
        with console.status(what, spinner="dots"):
            yield
    else:
        yield
