"""Settings precedence (defaults < server.yaml < env < CLI) and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from server.settings import SettingsError, load_settings


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("GGUF_SERVE_"):
            monkeypatch.delenv(name)
    (tmp_path / "server.yaml").write_text(
        "port: 12000\nmax_queue: 7\nkeep_alive: 10m\nload:\n  n_ctx: 1024\n  type_k: q8_0\n"
    )
    (tmp_path / "models.yaml").write_text(
        "models:\n  demo:1b:\n    aliases: [demo:latest]\n    load:\n      n_ctx: 512\n"
    )
    monkeypatch.setenv("GGUF_SERVE_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_defaults_then_file(config_dir: Path) -> None:
    s = load_settings()
    assert s.port == 12000  # from the file
    assert s.host == "127.0.0.1"  # default
    assert s.max_queue == 7
    assert s.keep_alive == 600.0
    assert s.load.n_ctx == 1024 and s.load.type_k == "q8_0"
    assert s.load.n_parallel == 4  # default kept beside file values
    assert s.catalog_entry("DEMO:latest") is s.models["demo:1b"]


def test_env_beats_file_and_cli_beats_env(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGUF_SERVE_PORT", "13000")
    monkeypatch.setenv("GGUF_SERVE_LOAD__N_PARALLEL", "2")
    monkeypatch.setenv("GGUF_SERVE_KEEP_ALIVE", "-1")
    s = load_settings()
    assert s.port == 13000
    assert s.load.n_parallel == 2
    assert math.isinf(s.keep_alive)
    assert load_settings(port=14000).port == 14000
    assert load_settings(port=None).port == 13000  # unset flags do not override


def test_home_from_env(config_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GGUF_SERVE_HOME", str(tmp_path / "store"))
    assert load_settings().home == tmp_path / "store"


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("GGUF_SERVE_PORT", "99999", "port"),
        ("GGUF_SERVE_LOAD__TYPE_K", "q3_x", "load.type_k"),
        ("GGUF_SERVE_LOAD__FLASH_ATTN", "maybe", "load.flash_attn"),
        ("GGUF_SERVE_KEEP_ALIVE", "soon", "keep_alive"),
    ],
)
def test_invalid_setting_is_one_line_naming_the_field(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert field in message


def test_unknown_key_in_server_yaml_is_refused(config_dir: Path) -> None:
    (config_dir / "server.yaml").write_text("prot: 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings()


def test_bad_catalog_load_option_is_refused(config_dir: Path) -> None:
    (config_dir / "models.yaml").write_text("models:\n  x:1b:\n    load:\n      n_ctxx: 5\n")
    with pytest.raises(SettingsError, match="n_ctxx"):
        load_settings()


def test_malformed_yaml_is_one_line(config_dir: Path) -> None:
    (config_dir / "server.yaml").write_text("port: [unclosed\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "\n" not in str(info.value)
