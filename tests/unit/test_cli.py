"""The `gguf-serve` command line: registry commands, serve's settings, one-line errors."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.cli import main
from server.registry import GGUFInfo, Store
from server.registry.humanize import human_age, human_bytes, human_number
from server.settings import Settings

MakeGGUF = Callable[..., Path]
REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    code = caught.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_list_empty_store(capsys: pytest.CaptureFixture[str], tmp_home: Path) -> None:
    code, out, _ = run(capsys, "list", "--home", str(tmp_home))
    assert code == 0
    assert out.split() == ["NAME", "ID", "SIZE", "QUANT", "PARAMS", "MODIFIED"]


def test_import_list_show_cp_rm(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    home = ["--home", str(tmp_home)]
    path = make_gguf()
    code, out, _ = run(capsys, "import", str(path), "tiny:1", *home)
    assert code == 0
    record = Store(tmp_home).get("tiny:1")
    size = human_bytes(path.stat().st_size + record.manifest.config.size)
    assert size.endswith(" KB")
    assert out.strip() == f"imported {path} as tiny:1 ({record.short_id}, {size})"

    code, out, _ = run(capsys, "--home", str(tmp_home), "list")  # global option form
    assert code == 0
    header, row = out.splitlines()
    assert re.split(r"\s{2,}", header) == ["NAME", "ID", "SIZE", "QUANT", "PARAMS", "MODIFIED"]
    manifest_id = hashlib.sha256(record.manifest_path.read_bytes()).hexdigest()[:12]
    assert re.split(r"\s{2,}", row) == [
        "tiny:1",
        manifest_id,
        size,
        "Q8_0",
        "23.4K",
        "Less than a second ago",
    ]
    assert header.index("ID") == row.index(manifest_id)  # columns line up

    code, out, _ = run(capsys, "show", "TINY:1", *home)
    assert code == 0
    model_block = out.split("\n\n")[0].splitlines()
    assert model_block[0].strip() == "Model"
    facts = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in model_block[1:])
    assert facts["name"] == "tiny:1"
    assert facts["ID"] == record.short_id
    assert facts["architecture"] == "llama"
    assert facts["parameters"] == "23.4K (23,360)"
    assert facts["quantization"] == "Q8_0 (file type 7)"
    assert facts["context length"] == "256"
    assert facts["layers"] == "1"
    assert (facts["heads"], facts["KV heads"], facts["embedding length"]) == ("4", "2", "64")
    assert facts["source"] == f"file path={path.resolve()}"
    assert re.search(r"^\s+Q8_0\s+1$", out, re.MULTILINE)
    assert "<|im_start|>" in out

    code, out, _ = run(capsys, "show", "tiny:1", "--json", *home)
    assert GGUFInfo.model_validate_json(out).tensor_types == {"Q8_0": 1, "F16": 1, "F32": 1}
    code, out, _ = run(capsys, "show", "tiny:1", "--template", *home)
    assert out == "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}\n"

    code, out, _ = run(capsys, "cp", "tiny:1", "copy", *home)
    assert (code, out.strip()) == (0, "copied 'tiny:1' to 'copy:latest'")
    code, out, _ = run(capsys, "rm", "tiny:1", "copy", *home)
    assert (code, out.splitlines()) == (0, ["deleted 'tiny:1'", "deleted 'copy:latest'"])
    assert Store(tmp_home).list() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["show", "nope"],
            "gguf-serve: error: model 'nope:latest' not found, try pulling it first",
        ),
        (["rm", "../x"], "gguf-serve: error: invalid model name '../x': '..' is not allowed"),
        (
            ["pull", "https://127.0.0.1:9/model.gguf"],
            "gguf-serve: error: pulling a URL needs a name to store it under (--as name:tag)",
        ),
        (
            ["serve", "--port", "0"],
            "gguf-serve: invalid setting: port: Input should be greater than or equal to 1",
        ),
        (
            ["serve", "--parallel", "0"],
            "gguf-serve: invalid setting: load.n_parallel: Input should be",
        ),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args, "--home", str(tmp_home))
    assert code == (2 if "invalid setting" in message else 1)
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_import_of_a_bad_file(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_text("hello")
    code, _, err = run(capsys, "import", str(junk), "junk", "--home", str(tmp_home))
    assert code == 1
    assert err.startswith(f"gguf-serve: error: {junk} is not a GGUF file")


def test_import_of_a_corrupt_gguf_names_the_users_file(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    data = make_gguf().read_bytes()
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(data[:24] + b"\xff" * (len(data) - 24))  # a header, then garbage
    code, _, err = run(capsys, "import", str(corrupt), "bad", "--home", str(tmp_home))
    assert code == 1
    assert err.startswith(f"gguf-serve: error: {corrupt} is truncated or corrupt"), err
    assert "partial" not in err


def test_invalid_setting_in_a_real_process(tmp_home: Path) -> None:
    env = {**os.environ, "GGUF_SERVE_PORT": "99999", "GGUF_SERVE_HOME": str(tmp_home)}
    done = subprocess.run(
        [sys.executable, "-m", "server", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        done.stderr
        == "gguf-serve: invalid setting: port: Input should be less than or equal to 65535\n"
    )


def test_serve_passes_flags_as_settings(
    capsys: pytest.CaptureFixture[str], tmp_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []
    fake_app = types.ModuleType("server.app")
    fake_app.run_server = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.app", fake_app)
    monkeypatch.setenv("GGUF_SERVE_LOAD__N_CTX", "1024")
    code, _, err = run(
        capsys,
        "serve",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--model", "tiny:1",
        "--parallel", "2",
        "--home", str(tmp_home),
    )  # fmt: skip
    assert code == 0, err
    [settings] = seen
    assert (settings.host, settings.port, settings.default_model) == ("0.0.0.0", 8080, "tiny:1")
    assert settings.home == tmp_home
    assert settings.load.n_parallel == 2
    assert settings.load.n_ctx == 1024  # the env's nested value survives the --parallel merge


def test_registry_commands_do_not_import_the_server(tmp_home: Path) -> None:
    code = "import sys; from server.cli import main\n" + (
        "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('fastapi', 'llama_cpp', 'uvicorn', 'server.app') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    env = {**os.environ, "GGUF_SERVE_HOME": str(tmp_home)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == ""


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (134_515_008, "135M"),
        (8_030_261_248, "8.03B"),
        (70_553_706_496, "70.6B"),
        (405_000_000_000, "405B"),
        (1_500_000_000_000, "1.50T"),
        (23_360, "23.4K"),
        (999, "999"),
    ],
)
def test_human_number(count: int, text: str) -> None:
    assert human_number(count) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (98_362_432, "98 MB"),
        (1_500, "1.5 KB"),
        (1_000, "1 KB"),
        (999, "999 B"),
        (4_920_000_000, "4.9 GB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "Less than a second ago"),
        (1, "1 second ago"),
        (45, "45 seconds ago"),
        (90, "About a minute ago"),
        (150, "2 minutes ago"),
        (3600, "About an hour ago"),
        (5 * 3600, "5 hours ago"),
        (3 * 86400, "3 days ago"),
        (21 * 86400, "3 weeks ago"),
        (90 * 86400, "3 months ago"),
        (800 * 86400, "2 years ago"),
    ],
)
def test_human_age(seconds: int, text: str) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert human_age(now - timedelta(seconds=seconds), now) == text
