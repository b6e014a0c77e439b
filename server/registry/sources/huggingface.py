"""Hugging Face: `hf.co/<user>/<repo>:<quant>` (or `huggingface.co/...`).

huggingface_hub lists the repo (file names, sizes, LFS sha256) and builds the download URLs and
auth headers; the bytes go through our own downloader so they stream into the store, resume,
are checked against the hub's sha256 and report progress like every other pull.
"""

from __future__ import annotations

import logging
from typing import Any

from server.errors import ModelNotFound, PullError
from server.registry.manifest import SourceInfo
from server.registry.sources.base import ProgressCallback, PullProgress, pulling_status
from server.registry.sources.download import BlobFetch, Downloader
from server.registry.sources.gguf_blobs import fetch_gguf
from server.registry.sources.header import RangeReader, RemoteFile, RemoteHeader
from server.registry.sources.hf_files import HubFile, choose_gguf
from server.registry.sources.transport import check_url, new_client
from server.registry.store import ModelRecord, Store
from server.registry.tags import ModelName

log = logging.getLogger(__name__)

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})
_SHA256 = frozenset("0123456789abcdef")


def is_hf_name(name: ModelName) -> bool:
    """Whether `name` points at the Hugging Face hub."""
    return name.host.lower() in HF_HOSTS


class HuggingFaceSource:
    """A GGUF model repo on the Hugging Face hub (or a mirror at `endpoint`)."""

    def __init__(
        self,
        name: ModelName,
        *,
        endpoint: str,
        token: str | None,
        insecure: bool = False,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.name = name
        self.repo = f"{name.namespace}/{name.model}"
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.insecure = insecure
        self.retries = retries
        self.backoff = backoff

    def describe(self) -> str:
        return f"{self.endpoint}/{self.repo} (Hugging Face)"

    def pull(self, store: Store, name: ModelName, progress: ProgressCallback) -> ModelRecord:
        """Pick the GGUF file(s) for the tag, download and verify them, store the model.

        Raises ModelNotFound (no repo, no matching file), PullError (network, access, a file
        without an LFS sha256), ChecksumMismatch, InvalidModelFile.
        """
        from huggingface_hub import hf_hub_url  # heavy import: only when pulling from the hub
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        progress(PullProgress("pulling manifest"))
        check_url(self.endpoint, insecure=self.insecure)
        files, revision = self._list_files()
        chosen = choose_gguf(files, self.name.tag, self.repo)
        headers = build_hf_headers(token=self.token, library_name="gguf-serve")
        jobs = []
        for file in chosen:
            sha = (file.sha256 or "").lower()
            if len(sha) != 64 or not set(sha) <= _SHA256 or file.size is None:
                raise PullError(
                    f"the hub gives no sha256 for {self.repo}/{file.path} (not an LFS file), "
                    "so it cannot be verified"
                )
            digest = f"sha256:{sha}"
            url = hf_hub_url(self.repo, file.path, revision=revision, endpoint=self.endpoint)
            jobs.append(BlobFetch(url, pulling_status(digest), digest, file.size, headers))
        with new_client() as client:
            downloader = Downloader(
                client, insecure=self.insecure, retries=self.retries, backoff=self.backoff
            )
            models, _, info = fetch_gguf(store, downloader, jobs, progress)
        progress(PullProgress("verifying sha256 digest"))
        source = SourceInfo.model_validate(
            {
                "type": "huggingface",
                "repo": self.repo,
                "revision": revision,
                "files": [file.path for file in chosen],
            }
        )
        progress(PullProgress("writing manifest"))
        record = store.add_model(name, models[0], info, source, tuple(models[1:]))
        progress(PullProgress("success"))
        return record

    def read_header(self) -> RemoteHeader:
        """The GGUF header of the file (or split parts) the tag names, read with HTTP ranges.

        Raises ModelNotFound, PullError, InvalidModelFile.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        check_url(self.endpoint, insecure=self.insecure)
        files, revision = self._list_files()
        chosen = choose_gguf(files, self.name.tag, self.repo)
        headers = build_hf_headers(token=self.token, library_name="gguf-serve")
        remote = [
            RemoteFile(
                hf_hub_url(self.repo, f.path, revision=revision, endpoint=self.endpoint),
                headers,
                f.size,
            )
            for f in chosen
        ]
        with new_client() as client:
            reader = RangeReader(client, insecure=self.insecure)
            info = reader.info(remote, chosen[0].path)
        return RemoteHeader(info, self.describe(), [f.path for f in chosen], reader.bytes_read)

    def _list_files(self) -> tuple[list[HubFile], str]:
        """The repo's files with sizes and LFS sha256, and the commit they belong to."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        api = HfApi(endpoint=self.endpoint, token=self.token, library_name="gguf-serve")
        try:
            info = api.model_info(self.repo, files_metadata=True)
        except GatedRepoError:
            raise PullError(
                f"{self.repo} is gated: accept its terms on the hub and set HF_TOKEN"
            ) from None
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise ModelNotFound(
                f"the Hugging Face repo {self.repo} was not found (private repos need HF_TOKEN)"
            ) from None
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 404:  # a mirror without error codes
                raise ModelNotFound(f"the Hugging Face repo {self.repo} was not found") from None
            raise PullError(f"the hub at {self.endpoint} refused {self.repo}: {exc}") from None
        except Exception as exc:  # transport errors are the HTTP library's own, per version
            raise PullError(f"cannot reach the hub at {self.endpoint}: {exc}") from None
        files = [_hub_file(sibling) for sibling in info.siblings or []]
        return files, info.sha or "main"


def _hub_file(sibling: Any) -> HubFile:
    lfs = sibling.lfs
    sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
    size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
    return HubFile(path=sibling.rfilename, size=size, sha256=sha)
