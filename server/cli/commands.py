"""The REPL's slash commands (`/set`, `/show`, `/clear`, `/load`, `/?`, `/bye`), as in `ollama run`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from server.cli.client import ServerClient
from server.cli.session import PARAMETERS, ChatSession, parse_parameter
from server.errors import GGUFServeError
from server.registry.humanize import human_number

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message."""

HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats"""

HELP_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters"""

HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template"""

HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit gguf-serve (/bye)
  Up, Down            Previous, next message"""


class Commands:
    """Runs one slash command against a session; `history` toggles the line reader's history."""

    def __init__(
        self,
        client: ServerClient,
        session: ChatSession,
        echo: Callable[[str], None],
        set_history: Callable[[bool], None],
    ) -> None:
        self.client = client
        self.session = session
        self.echo = echo
        self.set_history = set_history

    def run(self, line: str) -> bool:
        """Run `line` (which starts with '/'); False means leave the chat."""
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        name, args = words[0], words[1:]
        if name in ("/bye", "/exit"):
            return False
        if name == "/clear":
            self.session.clear()
            self.echo("Cleared session context")
        elif name == "/set":
            self._set(args, line)
        elif name == "/show":
            self._show(args)
        elif name == "/load":
            self._load(args)
        elif name in ("/?", "/help"):
            self.echo(_help(args))
        else:
            self.echo(f"Unknown command '{name}'. Type /? for help")
        return True

    def _set(self, args: list[str], line: str) -> None:
        session = self.session
        what = args[0] if args else ""
        if what == "parameter":
            if len(args) < 2:
                self.echo(HELP_PARAMETERS)
                return
            try:
                value = parse_parameter(args[1], args[2:])
            except ValueError as exc:
                self.echo(f"Couldn't set parameter: {exc}")
                return
            session.options[args[1]] = value
            self.echo(f"Set parameter '{args[1]}' to '{', '.join(args[2:])}'")
        elif what == "system":
            text = line.split("system", 1)[1].strip()  # the raw text, spacing and quotes kept
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            session.system = text or None
            self.echo("Set system message." if text else "Cleared system message.")
        elif what in ("verbose", "quiet"):
            session.verbose = what == "verbose"
            self.echo(f"Set '{what}' mode.")
        elif what == "format" and args[1:2] == ["json"]:
            session.format = "json"
            self.echo("Set format to 'json' mode.")
        elif what == "noformat":
            session.format = None
            self.echo("Disabled format.")
        elif what in ("wordwrap", "nowordwrap"):
            session.wordwrap = what == "wordwrap"
            self.echo(f"Set '{what}' mode.")
        elif what in ("history", "nohistory"):
            self.set_history(what == "history")
            self.echo(f"Set '{what}' mode.")
        else:
            self.echo(HELP_SET)

    def _show(self, args: list[str]) -> None:
        what = args[0] if args else ""
        if what not in ("info", "license", "modelfile", "parameters", "system", "template"):
            self.echo(HELP_SHOW)
            return
        try:
            shown = self.client.show(self.session.model)
        except GGUFServeError as exc:
            self.echo(f"error: {exc.message}")
            return
        if what == "info":
            self.echo(describe(shown))
        elif what == "parameters":
            self.echo(self._parameters(shown))
        elif what == "system":
            self.echo(
                self.session.system or shown.get("system") or "No system message was specified."
            )
        else:
            key = {"license": "license", "modelfile": "modelfile", "template": "template"}[what]
            self.echo(str(shown.get(key) or f"No {what} was specified for this model."))

    def _parameters(self, shown: dict[str, Any]) -> str:
        lines = []
        if shown.get("parameters"):
            lines += ["Model defined parameters:", str(shown["parameters"])]
        if self.session.options:
            width = max(len(name) for name in self.session.options) + 4
            lines += ["User defined parameters:"]
            lines += [f"{name:<{width}}{value}" for name, value in self.session.options.items()]
        return "\n".join(lines) or "No parameters were specified for this model."

    def _load(self, args: list[str]) -> None:
        if len(args) != 1:
            self.echo("Usage:\n  /load <modelname>")
            return
        self.echo(f"Loading model '{args[0]}'")
        try:
            self.client.load(args[0], self.session.keep_alive, self.session.options)
        except GGUFServeError as exc:
            self.echo(f"error: {exc.message}")
            return
        self.session.model = args[0]
        self.session.clear()


def _help(args: list[str]) -> str:
    topic = args[0] if args else ""
    if topic == "set":
        return HELP_SET
    if topic == "show":
        return HELP_SHOW
    if topic in ("shortcuts", "shortcut"):
        return HELP_SHORTCUTS
    if topic == "parameter":
        return HELP_PARAMETERS
    return HELP


def describe(shown: dict[str, Any]) -> str:
    """`/show info`: the model's facts from /api/show, laid out as `ollama show` does."""
    info: dict[str, Any] = shown.get("model_info") or {}
    details: dict[str, Any] = shown.get("details") or {}
    arch = str(info.get("general.architecture") or details.get("family") or "-")
    count = info.get("general.parameter_count")
    facts = [
        ("architecture", arch),
        (
            "parameters",
            human_number(count) if isinstance(count, int) else details.get("parameter_size"),
        ),
        ("context length", info.get(f"{arch}.context_length")),
        ("embedding length", info.get(f"{arch}.embedding_length")),
        ("quantization", details.get("quantization_level")),
    ]
    lines = ["  Model"]
    lines += [f"    {key:<20}{value}" for key, value in facts if value not in (None, "")]
    if shown.get("capabilities"):
        lines += ["", "  Capabilities"] + [f"    {cap}" for cap in shown["capabilities"]]
    if shown.get("parameters"):
        lines += ["", "  Parameters"] + [f"    {p}" for p in str(shown["parameters"]).splitlines()]
    if shown.get("system"):
        lines += ["", "  System", f"    {shown['system']}"]
    if shown.get("license"):
        lines += ["", "  License", f"    {str(shown['license']).splitlines()[0]}"]
    return "\n".join(lines)


__all__ = ["HELP", "PARAMETERS", "Commands", "describe"]
