# The README's two commands: `make run` and `make test`. Both set everything up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MODEL  ?= smollm2:135m
HOST   ?= 127.0.0.1
PORT   ?= 11434

RPC_SERVER := .cache/rpc-server/rpc-server

.PHONY: run test install model browser lint typecheck unit integration bench bench-memory bench-quant clean test-container rpc-server soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python is compiled once into a wheel kept outside the clone (scripts/llama_wheel.py,
# with llama.cpp's RPC backend on); the venv, the image and the RPC tools all use that one build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$$($(PYTHON) scripts/llama_wheel.py)"
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

# llama.cpp's rpc-server for split models (`gguf-serve rpc-server`): one C++ file from the same
# llama-cpp-python sdist, linked against the installed libggml-rpc.so (seconds, not a rebuild).
rpc-server: $(RPC_SERVER)

$(RPC_SERVER): $(STAMP) scripts/build_rpc_server.py
	$(BIN)/python scripts/build_rpc_server.py --out $@

model: install
	@$(BIN)/gguf-serve show $(MODEL) >/dev/null 2>&1 || $(BIN)/gguf-serve pull $(MODEL)

run: model
	$(BIN)/gguf-serve serve --host $(HOST) --port $(PORT) --model $(MODEL)

# Debian's Chromium, for the web page's tests (tests/integration/test_ui.py drives it with
# Playwright); nothing downloads a browser of its own. About 100 s on a fresh Debian 12.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; }

lint: install
	$(BIN)/ruff check server tests bench docker scripts
	$(BIN)/ruff format --check server tests bench docker scripts
	$(BIN)/hadolint Dockerfile

typecheck: install
	$(BIN)/mypy

test: lint typecheck browser rpc-server
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install browser rpc-server
	$(BIN)/python -m pytest tests/integration

# The Dockerfile and compose.yaml built and run for real with podman (tests/container/run.sh).
test-container: install
	rm -f docker/wheels/*.whl
	cp "$$($(PYTHON) scripts/llama_wheel.py)" docker/wheels/
	bash tests/container/run.sh

bench: model
	$(BIN)/python bench/decode_vs_raw.py
	$(BIN)/python bench/concurrency.py

# The memory plan against llama.cpp's buffers and RSS (quantizes a ladder into .cache/bench-ladder once).
bench-memory: model
	$(BIN)/python bench/memory_plan.py

# docs/QUANTIZATION.md: the ladder compared and plotted, KV types, and our perplexity against
# llama.cpp's own tool (compiled from the sdist's one source file against the wheel's libraries).
bench-quant: model
	$(BIN)/python bench/quant_ladder.py
	$(BIN)/python bench/perplexity_vs_llamacpp.py

# 1,000 mixed requests (both APIs, stream or not, tools, 10% hang-ups) against a --parallel 8
# server on the test store: no 5xx, RSS flat after warm-up, slots idle, /health answering.
SOAK_HOME := .cache/test-home
soak: install
	@GGUF_SERVE_HOME=$(SOAK_HOME) $(BIN)/gguf-serve show $(MODEL) >/dev/null 2>&1 || GGUF_SERVE_HOME=$(SOAK_HOME) $(BIN)/gguf-serve pull $(MODEL)
	$(BIN)/python bench/soak.py --home $(SOAK_HOME)

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
