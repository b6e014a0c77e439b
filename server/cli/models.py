"""Store commands: pull, list, show, rm, cp, import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from server.cli.common import (
    ConfigDirOption,
    HomeOption,
    PullView,
    app,
    echo_columns,
    registry_for,
)
from server.registry import GGUFInfo, ModelRecord
from server.registry.humanize import human_age, human_bytes

_TEMPLATE_LINES = 6


@app.command()
def pull(
    ctx: typer.Context,
    tag: Annotated[
        str,
        typer.Argument(
            help="Model name (smollm2:135m, llama3.1:8b, hf.co/user/repo:Q4_K_M) "
            "or an https URL of a .gguf file."
        ),
    ],
    as_name: Annotated[
        str | None,
        typer.Option(
            "--as", help="Store under this name (required for a URL).", show_default=False
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plain http to hosts that are not loopback.")
    ] = False,
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="sha256:<hex> a URL download must have.", show_default=False),
    ] = None,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Download a model into the store (Ollama registry, Hugging Face, a URL, the catalog)."""
    registry = registry_for(ctx, home, config_dir)
    console = Console(stderr=True)
    with PullView(console) as view:
        record = registry.pull(tag, view.update, as_name=as_name, insecure=insecure, digest=digest)
    typer.echo(f"pulled {record.name} ({record.short_id}, {human_bytes(record.size)})")


@app.command("list")
def list_(ctx: typer.Context, config_dir: ConfigDirOption = None, home: HomeOption = None) -> None:
    """List the models in the store (and in Ollama's store, marked `ollama`)."""
    registry = registry_for(ctx, home, config_dir)
    records = registry.list()
    rows = [["NAME", "ID", "SIZE", "QUANT", "PARAMS", "MODIFIED"]]
    rows += [
        [
            record.name.display,
            record.short_id,
            human_bytes(record.size),
            record.config.file_type or "-",
            record.config.model_type or "-",
            human_age(record.modified_at),
        ]
        for record in records
    ]
    if any(record.from_ollama for record in records):  # the column only when it says something
        rows[0].append("FROM")
        for row, record in zip(rows[1:], records, strict=True):
            row.append("ollama" if record.from_ollama else "")
    echo_columns(rows)


@app.command()
def show(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="Model name.")],
    template: Annotated[
        bool, typer.Option("--template", help="Print the whole chat template.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every header fact as JSON.")
    ] = False,
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Show what a model's GGUF header says."""
    registry = registry_for(ctx, home, config_dir)
    resolved = registry.resolve(tag)
    info = resolved.info
    if as_json:
        typer.echo(info.model_dump_json(indent=2))
        return
    if template:
        typer.echo(info.chat_template or "")
        return
    record = registry.record(resolved.model_name)
    typer.echo("\n".join(_describe(record, info)))


@app.command()
def rm(
    ctx: typer.Context,
    tags: Annotated[list[str], typer.Argument(help="Model names.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Remove models; their blobs go when no other model uses them."""
    registry = registry_for(ctx, home, config_dir)
    for tag in tags:
        typer.echo(f"deleted '{registry.remove(tag)}'")


@app.command()
def cp(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="Existing model name.")],
    dst: Annotated[str, typer.Argument(help="New name.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Give a model another name (no bytes are copied)."""
    registry = registry_for(ctx, home, config_dir)
    record = registry.copy(src, dst)
    typer.echo(f"copied '{src}' to '{record.name}'")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local .gguf file.")],
    tag: Annotated[str, typer.Argument(help="Name to store it under.")],
    config_dir: ConfigDirOption = None,
    home: HomeOption = None,
) -> None:
    """Copy a local GGUF file into the store under a name."""
    registry = registry_for(ctx, home, config_dir)
    record = registry.import_file(path, tag)
    typer.echo(f"imported {path} as {record.name} ({record.short_id}, {human_bytes(record.size)})")


def _describe(record: ModelRecord, info: GGUFInfo) -> list[str]:
    """The `show` report: model facts, tensor types, a chat template excerpt."""

    def opt(value: object) -> str:
        return "-" if value is None else str(value)

    quant = info.quant if info.file_type is None else f"{info.quant} (file type {info.file_type})"
    facts = [
        ("name", record.name.display),
        ("ID", record.short_id),
        ("architecture", info.architecture),
        ("parameters", f"{info.parameter_size} ({info.parameter_count:,})"),
        ("quantization", quant),
        ("bits per weight", f"{info.bits_per_weight:.2f}"),
        ("context length", opt(info.context_length)),
        ("layers", opt(info.block_count)),
        ("heads", opt(info.head_count)),
        ("KV heads", opt(info.head_count_kv)),
        ("embedding length", opt(info.embedding_length)),
        ("size", human_bytes(record.size)),
    ]
    facts += [("source", _source_text(record))]
    lines = ["  Model"]
    lines += [f"    {key:<20}{value}" for key, value in facts]
    lines += ["", "  Tensor types"]
    lines += [f"    {kind:<20}{count}" for kind, count in info.tensor_types.items()]
    lines += ["", "  Chat template"]
    if info.chat_template is None:
        lines.append("    (none)")
    else:
        template_lines = info.chat_template.splitlines() or [""]
        for line in template_lines[:_TEMPLATE_LINES]:
            lines.append("    " + (line if len(line) <= 96 else line[:95] + "…"))
        if len(template_lines) > _TEMPLATE_LINES:
            lines.append(f"    … ({len(template_lines)} lines; --template prints it all)")
    return lines


def _source_text(record: ModelRecord) -> str:
    if record.from_ollama:
        return f"ollama store {record.manifest_path.parents[4]} (read-only)"
    facts = record.config.gguf_serve
    if facts is None or facts.source is None:
        return "-"
    extra = facts.source.model_extra or {}
    details = " ".join(f"{key}={value}" for key, value in extra.items() if key != "sha256")
    return f"{facts.source.type} {details}".strip()
