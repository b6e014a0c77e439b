"""Loopback stand-ins for the Ollama registry, the Hugging Face hub and a plain file server.

Shared by the test_pull_*.py modules (this module holds no tests). Each is a real HTTP server
(`http.server` in a thread on 127.0.0.1, a free port) that serves bytes with Range support and
can be told to misbehave: drop the connection part-way through a body, corrupt a byte, stall.
Every request is recorded with its headers, so tests can check what the client really sent.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import gguf

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.ollama.image."


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Route:
    """What one path answers: a body, or a redirect, or a status."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    redirect: str | None = None
    etag: str | None = None
    drop_after: list[int] = field(default_factory=list)  # one entry per GET to break, in order
    delay: float = 0.0  # seconds between 64 KiB chunks (to make two pulls overlap)
    ranges: bool = True  # False: ignore Range and send the whole body with 200


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-response (as tests make them) are not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 answering from a dict of routes."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.bytes_sent = 0  # response body bytes written, every request together
        self.not_found_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_HEAD(self) -> None:
                server._answer(self, head=True)

            def do_GET(self) -> None:
                server._answer(self, head=False)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def requests_to(self, path: str, method: str = "GET") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path and s.method == method]

    def _answer(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.seen.append(
                Seen(
                    "HEAD" if head else "GET",
                    path,
                    {k.lower(): v for k, v in handler.headers.items()},
                )
            )
            route = self.routes.get(path)
            drop = route.drop_after.pop(0) if route and route.drop_after and not head else None
        if route is None:
            body = b'{"error": "not found"}'
            self._send(handler, 404, body, "application/json", head, self.not_found_headers)
            return
        if route.redirect is not None:
            handler.send_response(302)
            handler.send_header("Location", route.redirect)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if route.status != 200:
            self._send(handler, route.status, route.body, route.content_type, head)
            return
        body, start, stop = route.body, 0, len(route.body)
        ranged = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        if ranged and route.ranges and (if_range is None or if_range == route.etag):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first)
            stop = min(int(last) + 1, len(body)) if last else len(body)
            if start >= len(body):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(body)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", route.content_type)
        handler.send_header("Content-Length", str(stop - start))
        handler.send_header("Accept-Ranges", "bytes")
        if route.etag:
            handler.send_header("ETag", route.etag)
        handler.end_headers()
        if head:
            return
        end = stop if drop is None else min(stop, start + drop)
        step = 1 << 16
        try:
            for offset in range(start, end, step):
                piece = body[offset : min(offset + step, end)]
                handler.wfile.write(piece)
                with self._lock:
                    self.bytes_sent += len(piece)
                if route.delay:
                    time.sleep(route.delay)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if drop is not None:
            handler.close_connection = True  # short body: the client sees the connection drop

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        kind: str,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    return f"sha256:{sha256(data)}"


class FakeOllamaRegistry(LoopbackServer):
    """`/v2/<ns>/<model>/manifests/<tag>` and `/v2/<ns>/<model>/blobs/<digest>`; blobs redirect
    to `/cdn/<hex>` as the real registry redirects to its CDN."""

    def add_model(
        self,
        repo: str,
        tag: str,
        gguf_bytes: bytes,
        *,
        template: str | None = "{{ .Prompt }}",
        params: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Publish a model; returns its manifest (a dict the test may tamper with and re-set)."""
        layers = [self.add_blob(repo, gguf_bytes, LAYER + "model")]
        if template is not None:
            layers.append(self.add_blob(repo, template.encode(), LAYER + "template"))
        if params is not None:
            layers.append(self.add_blob(repo, json.dumps(params).encode(), LAYER + "params"))
        config_doc = config or {
            "model_format": "gguf",
            "model_family": "llama",
            "model_type": "135M",
            "file_type": "Q4_1",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
        config_layer = self.add_blob(repo, json.dumps(config_doc).encode(), CONFIG_TYPE)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config_layer,
            "layers": layers,
        }
        self.set_manifest(repo, tag, manifest)
        return manifest

    def add_blob(self, repo: str, data: bytes, media_type: str) -> dict[str, Any]:
        hexdigest = sha256(data)
        self.routes[f"/v2/{repo}/blobs/sha256:{hexdigest}"] = Route(redirect=f"/cdn/{hexdigest}")
        self.routes[f"/cdn/{hexdigest}"] = Route(body=data)
        return {"mediaType": media_type, "digest": f"sha256:{hexdigest}", "size": len(data)}

    def set_manifest(self, repo: str, tag: str, manifest: dict[str, Any] | bytes) -> None:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        self.routes[f"/v2/{repo}/manifests/{tag}"] = Route(body=body, content_type=MANIFEST_TYPE)

    def blob_route(self, data: bytes) -> Route:
        return self.routes[f"/cdn/{sha256(data)}"]


class FakeHub(LoopbackServer):
    """The Hugging Face endpoints huggingface_hub and our source use: `GET /api/models/<repo>`
    (and `/revision/<rev>`) with file metadata, and `/<repo>/resolve/<rev>/<file>`, which
    redirects to `cdn` (another origin, as the real hub redirects to its CDN)."""

    def __init__(self, cdn: LoopbackServer) -> None:
        super().__init__()
        self.cdn = cdn
        # How the hub says "no such repo"; huggingface_hub turns it into RepositoryNotFoundError.
        self.not_found_headers = {"X-Error-Code": "RepoNotFound"}
        self.revision = "0123456789abcdef0123456789abcdef01234567"

    def add_repo(
        self, repo: str, files: dict[str, bytes], *, wrong_sha: set[str] | None = None
    ) -> None:
        siblings = [{"rfilename": "README.md", "size": 5, "blobId": "1" * 40}]
        for name, data in files.items():
            hexdigest = sha256(data)
            listed = "0" * 64 if name in (wrong_sha or set()) else hexdigest
            siblings.append(
                {
                    "rfilename": name,
                    "size": len(data),
                    "blobId": "2" * 40,
                    "lfs": {"sha256": listed, "size": len(data), "pointerSize": 134},
                }
            )
            self.routes[f"/{repo}/resolve/{self.revision}/{name}"] = Route(
                redirect=f"{self.cdn.url}/lfs/{hexdigest}"
            )
            self.cdn.routes[f"/lfs/{hexdigest}"] = Route(body=data, etag=f'"{hexdigest}"')
        info = json.dumps({"id": repo, "sha": self.revision, "siblings": siblings}).encode()
        for path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main"):
            self.routes[path] = Route(body=info, content_type="application/json")


def split_gguf(source: Path, out_dir: Path, stem: str, parts: int) -> list[Path]:
    """Rewrite `source` as a split GGUF of `parts` files named `<stem>-0000k-of-0000N.gguf`."""
    reader = gguf.GGUFReader(source)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    per_part = -(-len(reader.tensors) // parts)
    writer = gguf.GGUFWriter(out_dir / f"{stem}.gguf", arch, split_max_tensors=per_part)
    for fld in reader.fields.values():
        if fld.name == "general.architecture" or fld.name.startswith("GGUF."):
            continue
        kind = fld.types[0]
        sub = fld.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    made = sorted(out_dir.glob(f"{stem}-*-of-*.gguf"))
    assert len(made) == parts, made
    return made


def files_under(root: Path) -> list[str]:
    """Every file below `root` except the store lock, relative to it."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    )


def running(server: LoopbackServer) -> Iterator[LoopbackServer]:
    try:
        yield server
    finally:
        server.close()
