"""The one error hierarchy; the API layers map these classes to HTTP status codes and bodies."""

from __future__ import annotations


class GGUFServeError(Exception):
    """Base of every error the server raises on purpose."""

    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GGUFServeError):
    """The client sent something we cannot act on."""

    type = "invalid_request_error"


class InvalidName(InvalidRequest):
    """A model name or tag breaks the name grammar."""

    code = "invalid_model_name"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus requested tokens) does not fit in a slot's context."""

    code = "context_length_exceeded"


class InsufficientMemory(InvalidRequest):
    """A model (at the requested context) cannot fit the memory budget even alone."""

    code = "insufficient_memory"


class UnsupportedFeature(InvalidRequest):
    """A request field we cannot honour and that would change the answer."""

    code = "unsupported_parameter"


class PayloadTooLarge(InvalidRequest):
    """A request body passed its size limit (max_body_bytes, max_blob_bytes or the free disk)."""

    code = "payload_too_large"


class Forbidden(GGUFServeError):
    """The request is well formed but this client may not do it (a setting would allow it)."""

    type = "permission_error"
    code = "forbidden"


class ModelNotFound(GGUFServeError):
    """No model with that name is in the store (or the catalog, for pulls)."""

    type = "invalid_request_error"
    code = "model_not_found"


class InvalidModelFile(GGUFServeError):
    """A file is not a usable GGUF model (bad magic, truncated, unreadable)."""

    type = "invalid_request_error"
    code = "invalid_model_file"


class InvalidLoadOptions(InvalidRequest):
    """A combination of load options llama.cpp would reject or mis-handle."""

    code = "invalid_load_options"


class ModelLoadError(GGUFServeError):
    """llama.cpp cannot load the model: the model's fault, neither the client's nor a
    transient one, so it is answered with a status clients do not retry (422)."""

    type = "model_error"
    code = "model_load_failed"


class ModelTemplateError(GGUFServeError):
    """The model's own chat template (GGUF or Modelfile) ran past its time or size budget: the
    model's fault, answered like a model that cannot load (422, not retried)."""

    type = "model_error"
    code = "template_failed"


class PullError(GGUFServeError):
    """Fetching a model failed (network, source, or verification)."""

    code = "pull_failed"


class ChecksumMismatch(PullError):
    """Downloaded bytes do not match the expected digest."""

    code = "checksum_mismatch"


class Overloaded(GGUFServeError):
    """The request queue is full; the client should retry later."""

    type = "server_overloaded"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(GGUFServeError):
    """A loaded model cannot serve now (its engine process is down or restarting); retry later."""

    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerShuttingDown(ModelUnavailable):
    """The server is stopping (SIGTERM) and the grace period for running requests is over."""

    code = "server_shutting_down"


class ClientDisconnected(GGUFServeError):
    """The client closed the connection before its (non-streamed) answer was ready."""

    type = "invalid_request_error"
    code = "client_disconnected"


class EngineError(GGUFServeError):
    """A failure inside the engine while serving one request."""

    code = "engine_error"
