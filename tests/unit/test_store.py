"""The on-disk store (Ollama's layout), blobs, and the Registry facade over it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.errors import (
    ChecksumMismatch,
    InvalidModelFile,
    InvalidName,
    InvalidRequest,
    ModelNotFound,
    PullError,
)
from server.registry import Registry, Store
from server.registry import registry as registry_module
from server.registry.blob_writer import BlobWriter, partial_key
from server.registry.blobs import blob_path
from server.registry.files import atomic_write
from server.registry.gguf_info import read_gguf_info
from server.registry.manifest import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Manifest, SourceInfo
from server.registry.splits import link_split, prune_split_links
from server.settings import load_settings

MakeGGUF = Callable[..., Path]
LIB = ("registry.ollama.ai", "library")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> list[str]:
    """Every file in the store except the lock file, relative to the root."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    )


@pytest.fixture(autouse=True)
def _no_ollama_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own ~/.ollama/models must not show up in these tests."""
    monkeypatch.setenv("GGUF_SERVE_OLLAMA_MODELS", "")


# --- layout and listing ---------------------------------------------------------------------------


def test_import_writes_ollama_layout(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    source = make_gguf()
    store = Store(tmp_home)
    record = store.import_file(source, "tiny")

    manifest_path = tmp_home / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    model_hex = sha256_of(source)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert manifest["layers"] == [
        {
            "mediaType": "application/vnd.ollama.image.model",
            "digest": f"sha256:{model_hex}",
            "size": source.stat().st_size,
        }
    ]
    blob = tmp_home / "blobs" / f"sha256-{model_hex}"
    assert blob.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(blob.stat().st_mode) == 0o644

    config_hex = manifest["config"]["digest"].removeprefix("sha256:")
    config = json.loads((tmp_home / "blobs" / f"sha256-{config_hex}").read_bytes())
    assert config["model_format"] == "gguf"
    assert config["model_family"] == "llama"
    assert config["model_families"] == ["llama"]
    assert config["model_type"] == "23.4K"
    assert config["file_type"] == "Q8_0"
    assert config["gguf_serve"]["source"] == {"type": "file", "path": str(source.resolve())}
    assert config["gguf_serve"]["gguf"]["block_count"] == 1

    assert record.name.display == "tiny:latest"
    assert record.digest == hashlib.sha256(raw).hexdigest()
    assert record.short_id == record.digest[:12]
    assert record.size == source.stat().st_size + manifest["config"]["size"]
    assert record.model_path == blob
    assert files_under(tmp_home) == sorted(
        [
            "manifests/registry.ollama.ai/library/tiny/latest",
            f"blobs/sha256-{model_hex}",
            f"blobs/sha256-{config_hex}",
        ]
    )


def test_list_is_newest_first(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    assert store.list() == []
    store.import_file(make_gguf("a.gguf", seed=1), "a:1")
    store.import_file(make_gguf("b.gguf", seed=2), "hf.co/org/b:Q8_0")
    older = store.get("a:1").manifest_path
    os.utime(older, (1_000_000_000, 1_000_000_000))
    names = [r.name.display for r in store.list()]
    assert names == ["hf.co/org/b:Q8_0", "a:1"]


def test_names_match_case_insensitively_and_keep_stored_case(
    tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    store = Store(tmp_home)
    first = store.import_file(make_gguf(seed=1), "Tiny:V1")
    assert store.get("tiny:v1").name.display == "Tiny:V1"
    assert store.get("REGISTRY.OLLAMA.AI/LIBRARY/TINY:V1").digest == first.digest
    # Writing the same name in another case replaces the model in place.
    second = store.import_file(make_gguf("other.gguf", seed=2), "TINY:v1")
    assert second.name.display == "Tiny:V1"
    assert second.digest != first.digest
    assert [r.name.display for r in store.list()] == ["Tiny:V1"]


def test_get_missing_and_invalid(tmp_home: Path) -> None:
    store = Store(tmp_home)
    with pytest.raises(ModelNotFound, match="'nope:latest' not found"):
        store.get("nope")
    with pytest.raises(InvalidName):
        store.get("../../etc/passwd")
    assert store.find("nope") is None


def test_incomplete_models_are_not_listed(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    record = store.import_file(make_gguf(), "tiny")
    record.model_path.unlink()
    assert store.list() == []
    with pytest.raises(ModelNotFound, match="incomplete"):
        store.get("tiny")


def test_stray_files_are_ignored(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    store.import_file(make_gguf(), "tiny")
    model_dir = tmp_home / "manifests" / "registry.ollama.ai" / "library" / "tiny"
    (model_dir / ".tmp-abc-partial").write_text("{")  # an interrupted manifest write
    (model_dir / "broken").write_text("not json")  # a corrupt manifest
    (tmp_home / "blobs" / ("sha256-" + "0" * 64 + "-x-partial")).write_bytes(b"half")
    assert [r.name.display for r in store.list()] == ["tiny:latest"]


def test_symlink_out_of_the_store_is_refused(
    tmp_home: Path, make_gguf: MakeGGUF, tmp_path: Path
) -> None:
    store = Store(tmp_home)
    store.import_file(make_gguf(), "tiny")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "latest").write_bytes(store.get("tiny").manifest_path.read_bytes())
    (tmp_home / "manifests" / "registry.ollama.ai" / "library" / "evil").symlink_to(outside)
    with pytest.raises(InvalidName, match="outside the model store"):
        store.get("evil")
    assert [r.name.display for r in store.list()] == ["tiny:latest"]


# --- copy and remove ------------------------------------------------------------------------------


def test_copy_shares_blobs_and_id(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    original = store.import_file(make_gguf(), "tiny")
    blobs_before = files_under(tmp_home / "blobs")
    copy = store.copy("tiny", "ns/alias:v2")
    assert copy.name.display == "ns/alias:v2"
    assert copy.digest == original.digest
    assert copy.model_path == original.model_path
    assert files_under(tmp_home / "blobs") == blobs_before
    assert {r.name.display for r in store.list()} == {"tiny:latest", "ns/alias:v2"}
    with pytest.raises(ModelNotFound):
        store.copy("absent", "x")


def test_remove_keeps_blobs_still_in_use(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    a = store.import_file(make_gguf("a.gguf", seed=1), "a")
    store.copy("a", "c")
    b = store.import_file(make_gguf("b.gguf", seed=2), "b")
    a_blobs = {f"blobs/sha256-{layer.digest[7:]}" for layer in a.manifest.blobs}
    b_blobs = {f"blobs/sha256-{layer.digest[7:]}" for layer in b.manifest.blobs}

    assert store.remove("A").display == "a:latest"  # any case; returns the stored name
    assert not (tmp_home / "manifests" / "registry.ollama.ai" / "library" / "a").exists()
    assert a_blobs | b_blobs <= set(files_under(tmp_home))  # c still uses a's blobs

    store.remove("c")
    remaining = set(files_under(tmp_home))
    assert not a_blobs & remaining
    assert b_blobs <= remaining

    store.remove("b")
    assert files_under(tmp_home) == []
    assert list((tmp_home / "manifests").iterdir()) == []  # empty directories pruned
    with pytest.raises(ModelNotFound):
        store.remove("b")


def test_remove_a_corrupt_manifest(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    record = store.import_file(make_gguf(), "tiny")
    record.manifest_path.write_text("garbage")
    store.remove("tiny")
    assert not record.manifest_path.exists()


# --- import ---------------------------------------------------------------------------------------


def test_import_refuses_non_gguf_and_leaves_nothing(tmp_home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        Store(tmp_home).import_file(junk, "junk")
    assert files_under(tmp_home) == []


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.66, 0.95])
def test_import_refuses_truncated_names_the_users_file_and_leaves_nothing(
    tmp_home: Path, make_gguf: MakeGGUF, tmp_path: Path, fraction: float
) -> None:
    data = make_gguf().read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InvalidModelFile) as caught:
        Store(tmp_home).import_file(cut, "cut")
    assert caught.value.message.startswith(f"{cut} is truncated")
    assert "partial" not in caught.value.message and str(tmp_home) not in caught.value.message
    assert files_under(tmp_home) == []


def test_import_of_a_missing_file(tmp_home: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="cannot read"):
        Store(tmp_home).import_file(tmp_path / "absent.gguf", "x")


# --- blobs and atomic writes ----------------------------------------------------------------------


def test_blob_writer_commits_verified_bytes(tmp_path: Path) -> None:
    data = b"hello blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with BlobWriter(tmp_path, expected=digest, size=len(data)) as writer:
        writer.write(data[:5])
        assert writer.partial_path.name.endswith("-partial")
        writer.write(data[5:])
    assert writer.digest == digest
    assert writer.path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [writer.path.name]


@pytest.mark.parametrize(
    ("expected", "size", "fragment"),
    [
        ("sha256:" + "0" * 64, None, "sha256 mismatch"),
        (None, 3, "more than the expected 3 bytes"),
        (None, 30, "expected 30 bytes .*but received 10"),
    ],
)
def test_blob_writer_mismatch_leaves_nothing(
    tmp_path: Path, expected: str | None, size: int | None, fragment: str
) -> None:
    with (
        pytest.raises(ChecksumMismatch, match=fragment),
        BlobWriter(tmp_path, expected=expected, size=size) as w,
    ):
        w.write(b"hello blob")
    assert list(tmp_path.iterdir()) == []


def test_blob_writer_error_inside_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), BlobWriter(tmp_path) as writer:
        writer.write(b"partial data")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../etc/passwd",
        "sha256-" + "A" * 64,
        "sha512:" + "0" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 64 + "/x",
        "",
    ],
)
def test_bad_digests_never_become_paths(tmp_path: Path, digest: str) -> None:
    with pytest.raises(ValueError, match="invalid digest"):
        blob_path(tmp_path, digest)
    with pytest.raises(ValueError, match="invalid digest"):
        BlobWriter(tmp_path, expected=digest)


def test_manifest_with_bad_digest_is_rejected() -> None:
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../x", "size": 1}
    with pytest.raises(ValidationError):
        Manifest.model_validate({"config": layer, "layers": [layer]})


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "dir" / "file"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# --- a store written by Ollama --------------------------------------------------------------------


def _write_ollama_model(home: Path, source: Path, tag: str = "latest") -> dict[str, Any]:
    """Lay a model out exactly as Ollama does: no `gguf_serve` facts, an extra template layer."""
    blobs = home / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        hexdigest = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{hexdigest}").write_bytes(data)
        return f"sha256:{hexdigest}", len(data)

    model_digest, model_size = put(source.read_bytes())
    template_digest, template_size = put(b"{{ .Prompt }}")
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "23K",
        "file_type": "Q8_0",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [model_digest, template_digest]},
    }
    config_digest, config_size = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": model_digest,
                "size": model_size,
            },
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": template_digest,
                "size": template_size,
            },
        ],
    }
    path = home / "manifests" / "registry.ollama.ai" / "library" / "olla" / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def test_reads_a_store_written_by_ollama(
    tmp_home: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_gguf()
    manifest = _write_ollama_model(tmp_home, source)
    registry = Registry(load_settings(home=tmp_home))
    [record] = registry.list()
    assert record.name.display == "olla:latest"
    assert record.manifest.layer("template") is not None
    assert record.config.model_dump()["rootfs"]["type"] == "layers"  # Ollama's fields are kept
    assert record.size == sum(layer["size"] for layer in [manifest["config"], *manifest["layers"]])

    reads: list[Path] = []

    def counting_read(path: Path) -> Any:
        reads.append(path)
        return read_gguf_info(path)

    monkeypatch.setattr(registry_module, "read_gguf_info", counting_read)
    resolved = registry.resolve("olla")
    assert resolved.info.quant == "Q8_0"  # no cached facts: the header was read...
    assert registry.resolve("OLLA:latest").info == resolved.info
    assert reads == [record.model_path]  # ...once, then cached by blob digest

    registry.remove("olla")
    assert files_under(tmp_home) == []  # config, model and template blobs all gone


# --- the Registry facade --------------------------------------------------------------------------


def test_resolve_uses_cached_facts_without_reading_the_header(
    tmp_home: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_gguf()
    registry = Registry(load_settings(home=tmp_home))
    registry.import_file(source, "tiny:1")

    def no_reads(path: Path) -> Any:
        raise AssertionError(f"header of {path} read again")

    monkeypatch.setattr(registry_module, "read_gguf_info", no_reads)
    resolved = Registry(load_settings(home=tmp_home)).resolve("TINY:1")
    assert resolved.name == "tiny:1"
    assert resolved.model_name.tag == "1"
    assert resolved.path.read_bytes() == source.read_bytes()
    assert resolved.info.architecture == "llama"
    assert resolved.info.context_length == 256
    assert resolved.size == registry.store.get("tiny:1").size
    assert resolved.load_overrides == {}


def test_resolve_maps_catalog_aliases_and_load_overrides(
    tmp_home: Path, make_gguf: MakeGGUF
) -> None:
    settings = load_settings(
        home=tmp_home,
        models={"tiny:1": {"aliases": ["tiny:one", "org/tiny:uno"], "load": {"n_ctx": 128}}},
    )
    registry = Registry(settings)
    registry.import_file(make_gguf(), "tiny:1")
    for name in ("tiny:1", "tiny:one", "TINY:ONE", "org/tiny:uno"):
        resolved = registry.resolve(name)
        assert resolved.name == "tiny:1"
        assert resolved.load_overrides == {"n_ctx": 128}
    with pytest.raises(ModelNotFound, match="'tiny:two' not found, try pulling it first"):
        registry.resolve("tiny:two")


def test_default_catalog_alias_resolves_to_canonical(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    settings = load_settings(home=tmp_home)  # the catalog of configs/models.yaml
    registry = Registry(settings)
    registry.import_file(make_gguf(), "smollm2:135m")
    resolved = registry.resolve("smollm2:135m-instruct-q4_1")
    assert resolved.name == "smollm2:135m"
    assert resolved.load_overrides == settings.models["smollm2:135m"].load


def test_pull_of_a_name_outside_the_catalog_asks_its_registry(tmp_home: Path) -> None:
    registry = Registry(load_settings(home=tmp_home))
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    with pytest.raises(PullError, match=r"cannot reach the registry at http://127\.0\.0\.1:9"):
        registry.pull("127.0.0.1:9/library/nosuchmodel:7b")
    assert files_under(tmp_home) == []


# --- Ollama's store is read-only --------------------------------------------------------------------


def test_an_ollama_store_is_never_written(
    tmp_home: Path, tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    theirs = tmp_path / "ollama"
    _write_ollama_model(theirs, make_gguf())
    before = files_under(theirs)
    store = Store(theirs, ollama=True)
    [record] = store.list()
    assert record.from_ollama and not Store(tmp_home).list()
    attempts: list[Callable[[], object]] = [
        lambda: store.remove("olla"),
        lambda: store.copy("olla", "other"),
        lambda: store.import_file(make_gguf("b.gguf", seed=3), "new"),
        lambda: store.write_blob(b"x", "text/plain"),
        lambda: store.prune_blobs([record.model_digest]),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidRequest, match="Ollama's model store"):
            attempt()
    assert files_under(theirs) == before
    assert not (theirs / ".lock").exists()


def test_ollama_store_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GGUF_SERVE_OLLAMA_MODELS")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "o"))
    assert load_settings().ollama_models == tmp_path / "o"
    monkeypatch.delenv("OLLAMA_MODELS")
    assert load_settings().ollama_models == Path.home() / ".ollama" / "models"
    for off in ("", "none", "off"):
        monkeypatch.setenv("GGUF_SERVE_OLLAMA_MODELS", off)
        assert load_settings().ollama_models is None
    same = Registry(load_settings(home=tmp_path, ollama_models=str(tmp_path)))
    assert same.ollama_store is None  # our own store is not read twice


# --- partial downloads -----------------------------------------------------------------------------


def test_resumable_writer_resumes_hashing_the_bytes_already_there(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def writer() -> BlobWriter:
        return BlobWriter(tmp_path, expected=digest, size=len(data), resume_key=partial_key(digest))

    with pytest.raises(ConnectionError), writer() as part:
        part.write(data[:100_000])
        raise ConnectionError("the connection drops")
    assert (tmp_path / f"{partial_key(digest)}-partial").stat().st_size == 100_000
    with writer() as part:
        assert part.written == 100_000 and not part.present
        part.write(data[100_000:])
        assert part.verify() == digest
        final = part.commit()
    assert final.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    with writer() as part:
        assert part.present
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_resumable_writer_commits_on_a_clean_exit(tmp_path: Path) -> None:
    data = b"resumable"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with BlobWriter(tmp_path, expected=digest, resume_key=partial_key(digest)) as part:
        part.write(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.path.name]
    assert part.path.read_bytes() == data


def test_resumable_writer_mismatch_deletes_the_partial(tmp_path: Path) -> None:
    digest = "sha256:" + "0" * 64
    key = partial_key(digest)
    with BlobWriter(tmp_path, expected=digest, size=4, resume_key=key) as part:
        with pytest.raises(ChecksumMismatch, match="more than the expected 4 bytes"):
            part.write(b"12345")
        assert list(tmp_path.iterdir()) == []
        part.restart()
        part.write(b"1234")
        with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
            part.verify()
    assert list(tmp_path.iterdir()) == []


# --- split GGUFs ---------------------------------------------------------------------------------


def test_split_links_are_named_for_llama_cpp_and_pruned_with_their_blobs(tmp_path: Path) -> None:
    blobs = []
    for i in range(3):
        blob = tmp_path / "blobs" / f"part{i}"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(bytes([i]))
        blobs.append(blob)
    root = tmp_path / "splits"
    first = link_split(root, blobs)
    assert first.name == "model-00001-of-00003.gguf"
    assert [p.name for p in sorted(first.parent.iterdir())] == [
        "model-00001-of-00003.gguf",
        "model-00002-of-00003.gguf",
        "model-00003-of-00003.gguf",
    ]
    assert [p.read_bytes() for p in sorted(first.parent.iterdir())] == [b"\0", b"\1", b"\2"]
    assert link_split(root, blobs) == first  # reused
    prune_split_links(root)
    assert first.exists()
    blobs[1].unlink()
    prune_split_links(root)
    assert list(root.iterdir()) == []


def test_adopt_file_moves_a_file_in_without_copying(tmp_home: Path, make_gguf: MakeGGUF) -> None:
    store = Store(tmp_home)
    with store.temp_dir() as scratch:
        made = scratch / "out.gguf"
        made.write_bytes(make_gguf().read_bytes())
        inode = made.stat().st_ino
        record = store.adopt_file(made, "made:1", SourceInfo(type="test"))
        assert not made.exists()
    assert record.model_path.stat().st_ino == inode
    assert record.config.file_type == "Q8_0"


def test_writing_a_blob_that_is_already_stored_reports_its_size(tmp_path: Path) -> None:
    for _ in range(2):
        with BlobWriter(tmp_path) as writer:
            writer.write(b"same bytes")
        assert (writer.digest, writer.written) == (
            "sha256:" + hashlib.sha256(b"same bytes").hexdigest(),
            10,
        )
    assert [p.name for p in tmp_path.iterdir()] == [writer.path.name]
