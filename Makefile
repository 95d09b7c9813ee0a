# From a fresh clone: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared/data)
CROSS_ENCODER ?=
# torch's CPU build, installed before anything else so that no CUDA build is pulled in.
# Users with other hardware install their own torch first; the project's range stays open.
TORCH_PIN ?= torch==2.13.0

export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken_cache
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAG_RERANK_CRANFIELD ?= $(SHARED)/cranfield

TRAINED ?= models/cranfield-minilm-ce

.PHONY: setup demo test train eval bench bench-server serve clean

$(BIN)/.installed: pyproject.toml integrations/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[test]' \
		-e 'integrations/langchain-rag-rerank[test]' \
		-e 'integrations/llama-index-postprocessor-rag-rerank[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/rag-rerank demo $(if $(CROSS_ENCODER),--cross-encoder $(CROSS_ENCODER))

test: setup
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 -p no:cacheprovider notebooks

# Fine-tune MiniLM-L6 as a cross-encoder on the training half of Cranfield's queries.
train: setup
	$(BIN)/rag-rerank train --output $(TRAINED)

# BM25 vs bi-encoder vs bi-encoder + the fine-tuned cross-encoder, on the held-out queries.
eval: setup
	$(BIN)/rag-rerank eval --cross-encoder $(TRAINED) --output runs/eval-cranfield

# Reranking speed: every backend against CrossEncoder.predict, in one process.
bench: setup
	$(BIN)/python benchmarks/bench_rerank_speed.py $(if $(wildcard $(TRAINED)),--model $(TRAINED))

# The server under load: batched vs one request at a time (loopback only, stops by itself).
bench-server: setup
	$(BIN)/python benchmarks/bench_server_load.py

serve: setup
	$(BIN)/rag-rerank serve $(if $(CROSS_ENCODER),--cross-encoder $(CROSS_ENCODER))

clean:
	rm -rf $(VENV) .chroma .pytest_cache
