# gguf-serve: a builder stage compiles llama-cpp-python into a virtual environment and bakes the
# models into a store; the runtime stage holds only that environment, the store and a non-root
# user. docs/docker.md has the details (GPU builds, proxies, pulling more models).
#
#   CPU (default)   docker build -t gguf-serve .
#   NVIDIA CUDA     docker build -t gguf-serve:cuda \
#                     --build-arg BUILDER_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#                     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#                     --build-arg LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" .
#
# Both base images need python3 >= 3.11 from their apt sources (Debian bookworm: 3.11,
# Ubuntu 24.04: 3.12) and must be the same distribution: the runtime stage reuses the builder's
# virtual environment, which points at /usr/bin/python3.

ARG BUILDER_IMAGE=debian:bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- toolchain: compilers, python3 and an empty virtual environment ---------------------------
FROM ${BUILDER_IMAGE} AS toolchain

# Package versions come with the base image's release; pinning them here would break the build
# at the distribution's next point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv g++ make cmake ninja-build \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV"

# ---- llama-requirement: pyproject.toml's llama-cpp-python line, alone in a file ----------------
FROM toolchain AS llama-requirement
WORKDIR /req
COPY pyproject.toml docker/llama_requirement.py ./
RUN python3 llama_requirement.py pyproject.toml > llama.txt

# ---- builder: llama-cpp-python compiled, the project installed, the models pulled -------------
FROM toolchain AS builder

# How pip reaches the package index. Unset by default; they exist only in this stage, so none of
# them (nor the certificate) reaches the final image.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST: a mirror or a private index.
#   PIP_CERT: a CA bundle for a TLS-inspecting proxy, as a path inside the build. Simplest: the
#     build secret `pip_cert`, which these steps use without PIP_CERT
#     (docker build / podman build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt);
#     or a mount (podman build -v CA:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
# CMake flags for llama.cpp, e.g. "-DGGML_RPC=on -DGGML_CUDA=on". The default is a CPU build with
# the RPC backend (load.rpc_servers), tuned for the building machine's CPU (llama.cpp's
# GGML_NATIVE); add -DGGML_NATIVE=off for an image that runs on older CPUs.
ARG LLAMA_CMAKE_ARGS="-DGGML_RPC=on"

# The long compile, in a layer that depends only on the llama-cpp-python requirement and on
# docker/wheels/ (a COPY is cached by content), so changes to the other dependencies or to the
# code do not redo it. A llama_cpp_python wheel placed in docker/wheels/ is installed instead of
# compiling (`make test-container` puts the one the venv was built from there: one compile for
# both); it must have been built for the image's CPU and Python (cp311 on Debian bookworm).
COPY --from=llama-requirement /req/llama.txt /tmp/llama.txt
COPY docker/wheels/ /tmp/wheels/
RUN --mount=type=secret,id=pip_cert \
    if [ -z "${PIP_CERT:-}" ] && [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && set -- /tmp/wheels/llama_cpp_python-*.whl \
 && if [ -f "$1" ]; then pip install --no-cache-dir "$1" -r /tmp/llama.txt; \
    else CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install --no-cache-dir -r /tmp/llama.txt; fi \
 && rm -rf /tmp/wheels

# The project with the rest of its dependencies (a wheel, with configs/ inside as its catalog),
# then the models to bake in: PRELOAD_MODELS lists tags (spaces or commas), pulled into the store
# that becomes /data.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY server ./server
ARG PRELOAD_MODELS="smollm2:135m"
RUN --mount=type=secret,id=pip_cert \
    if [ -z "${PIP_CERT:-}" ] && [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --no-cache-dir . \
 && export GGUF_SERVE_HOME=/data && mkdir "$GGUF_SERVE_HOME" \
 && (IFS=', ' && set -f && for tag in $PRELOAD_MODELS; do gguf-serve pull "$tag" || exit 1; done) \
 && gguf-serve list

# ---- runtime: python, the virtual environment, the store; no compilers, no pip caches ----------
FROM ${RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="gguf-serve" \
      org.opencontainers.image.description="A local inference server for GGUF models (OpenAI-compatible API)" \
      org.opencontainers.image.licenses="MIT"

# libgomp1: llama.cpp's CPU backend uses OpenMP. Versions: see the builder stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gguf \
 && useradd --system --no-log-init --uid 10001 --gid gguf --create-home --home-dir /home/gguf gguf

COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/bin/gguf-serve-healthcheck
# The store: the models baked at build time. A named volume mounted here starts as a copy of it.
COPY --from=builder --chown=10001:10001 /data /data

ENV PATH=/opt/venv/bin:$PATH \
    GGUF_SERVE_HOME=/data \
    GGUF_SERVE_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER 10001:10001
WORKDIR /home/gguf
VOLUME ["/data"]
EXPOSE 11434

# /health answers 503 while the default model loads and 200 once the server is ready.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["gguf-serve-healthcheck"]

# Exec form: gguf-serve is PID 1 and receives SIGTERM itself; uvicorn handles it and shuts down
# gracefully (the lifespan unloads the models).
ENTRYPOINT ["gguf-serve"]
CMD ["serve", "--host", "0.0.0.0"]
