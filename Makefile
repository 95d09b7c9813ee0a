# From a fresh clone: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared/data)
CROSS_ENCODER ?=
# The LLM that answers in `make demo` (default: the offline one; LLM=none skips it).
LLM ?=
# torch's CPU build, installed before anything else so that no CUDA build is pulled in.
# Users with other hardware install their own torch first; the project's range stays open.
TORCH_PIN ?= torch==2.13.0

export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken_cache
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAG_RERANK_CRANFIELD ?= $(SHARED)/cranfield
export RAG_RERANK_DEMO_DATA ?= $(SHARED)/scifact

# The reranker the project ships (fp16, with its model card); `make model` trains it again.
MODEL ?= models/rag-rerank-minilm-l6
TRAIN_DATA ?= $(SHARED)/scifact $(SHARED)/cranfield
COLLECTIONS ?= scifact cranfield medline npl cacm adi

.PHONY: setup demo test lint typecheck dist check-dist docs model eval eval-all bench bench-chunk-fit bench-server bench-ray bench-peers bench-bi-encoder bench-ingest-ceiling bench-latency bench-startup bench-llm eval-llm distil-label distil eval-distil serve clean

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
	$(BIN)/rag-rerank demo $(if $(CROSS_ENCODER),--cross-encoder $(CROSS_ENCODER)) $(if $(LLM),--llm $(LLM))

test: setup lint typecheck check-dist docs
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 -p no:cacheprovider notebooks

# ruff over everything (notebooks too; see pyproject.toml for the one rule they skip, and why).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy over the core (settings in pyproject.toml: every function typed, except the server's routes).
# In CI no cache is written (200 MB of disk a clean clone never reads again).
typecheck: setup
	$(BIN)/mypy $(if $(CI),--cache-dir=/dev/null)

# The documentation site in site/ (MkDocs Material; any warning fails the build).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The three packages' sdists and wheels, in dist/, checked as the package index would.
PACKAGES := . integrations/langchain-rag-rerank integrations/llama-index-postprocessor-rag-rerank models
dist: setup
	rm -rf dist
	for p in $(PACKAGES); do $(BIN)/python -m build --no-isolation --outdir dist $$p > /dev/null || exit 1; done
	$(BIN)/twine check --strict dist/*
	ls -l dist

# The wheels installed into a fresh venv (no checkout on the path) and used: imports, a store,
# a rerank with the shipped model (from the bundled-model extra, loaded by no path), both adapters.
# What a user's `pip install` gets.
SMOKE_VENV ?= .venv-smoke
check-dist: dist
	rm -rf $(SMOKE_VENV)
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SMOKE_VENV)/bin/python -m pip install -q --no-compile $(TORCH_PIN)
	$(SMOKE_VENV)/bin/python -m pip install -q --no-compile --find-links dist "$$(ls dist/rag_rerank-*.whl)[bundled-model]" \
		dist/langchain_rag_rerank-*.whl dist/llama_index_postprocessor_rag_rerank-*.whl
	smoke=$$(mktemp -d) && cd $$smoke && RAG_RERANK_CACHE=$$smoke/cache TIKTOKEN_CACHE_DIR=$(abspath $(TIKTOKEN_CACHE_DIR)) \
		$(abspath $(SMOKE_VENV))/bin/python $(abspath tests/installed/smoke.py); \
		status=$$?; rm -rf $$smoke; exit $$status
	rm -rf $(SMOKE_VENV)  # 2 GB (a second torch) that the tests after it would otherwise share the disk with

# Train the shipped reranker again: MiniLM-L6 corrected over the hybrid first stage, on SciFact's
# train split and Cranfield's training half (a tenth of them held out to pick the epoch).
model: setup
	$(BIN)/rag-rerank train $(foreach d,$(TRAIN_DATA),--data $(d)) --output $(MODEL) --fp16

# Every first stage and the shipped reranker on one collection's test queries (default Cranfield's half).
eval: setup
	$(BIN)/rag-rerank eval --cross-encoder $(MODEL) --depth 30 --output runs/eval-cranfield

# The README's evaluation table: BM25, dense, hybrid and hybrid + reranker on every collection.
eval-all: setup
	$(BIN)/rag-rerank eval $(foreach c,$(COLLECTIONS),--data $(SHARED)/$(c)) --cross-encoder $(MODEL) \
		--depth 30 --output runs/eval-all

# Chunks that fit the bi-encoder vs 256-tiktoken-token chunks, dense and hybrid, every collection.
bench-chunk-fit: setup
	$(BIN)/python benchmarks/bench_chunk_fit.py

# Reranking speed: every backend against CrossEncoder.predict, in one process.
bench: setup
	$(BIN)/python benchmarks/bench_rerank_speed.py --model $(MODEL)

# The server under load: batched vs one request at a time (loopback only, stops by itself).
bench-server: setup
	$(BIN)/python benchmarks/bench_server_load.py

# rag-rerank against the rerankers users pick instead, same model and pairs in one run. Peers that fit
# rag-rerank's pins install into .venv (the bench extra); sentence-transformers' ONNX/OpenVINO backends
# need optimum, which pins transformers < 5, so they get a venv of their own (.venv-peers, torch CPU pin first);
# infinity-emb pins sentence-transformers 3.4, so it gets another (.venv-infinity).
PEERS_VENV ?= .venv-peers
INFINITY_VENV ?= .venv-infinity
PEERS_PACKAGES := 'sentence-transformers[onnx,openvino]'
INFINITY_PACKAGES := 'infinity-emb[torch]==0.0.77'

# A peer's venv ($(1)): torch's CPU pin first, then the packages ($(2)) held to that pin.
define peer_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q $(TORCH_PIN)
	echo "$(TORCH_PIN)" > $(1)/constraints.txt
	$(1)/bin/python -m pip install -q $(2) -c $(1)/constraints.txt
	touch $(1)/.installed
endef

$(PEERS_VENV)/.installed:
	$(call peer_venv,$(PEERS_VENV),$(PEERS_PACKAGES))

$(INFINITY_VENV)/.installed:
	$(call peer_venv,$(INFINITY_VENV),$(INFINITY_PACKAGES))

bench-peers: setup $(PEERS_VENV)/.installed $(INFINITY_VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_peers.py --model $(MODEL) --peers-python $(PEERS_VENV)/bin/python \
		--infinity-python $(INFINITY_VENV)/bin/python

# The bi-encoder (ingest docs/s, dense nDCG@10, query latency): torch float32 vs OpenVINO float32 / bfloat16.
bench-bi-encoder: setup
	$(BIN)/python benchmarks/bench_bi_encoder.py

# How fast float32 ingest could be here at most (graph time vs the CPU's float32 MatMul rate).
bench-ingest-ceiling: setup
	$(BIN)/python benchmarks/bench_ingest_ceiling.py

# Start-up of the default reranker, cold and warm, and a warm `rag-rerank query`: this tree against 69b1db6
# (before the warm start without the model; --before REF or none).
bench-startup: setup
	$(BIN)/python benchmarks/bench_startup.py

# The LLM rerankers' pairs per second against transformers' plain GGUF path and the cross-encoder.
bench-llm: setup
	$(BIN)/python benchmarks/bench_llm_speed.py

# The query-likelihood fusion weight picked on training queries, judged on every collection's test
# queries (scores kept in runs/llm-scores.jsonl: a second run costs minutes, not an hour).
eval-llm: setup
	$(BIN)/python benchmarks/eval_llm.py

# Distillation (docs: Distillation). The teacher's scores of the training queries' hybrid top 20 are
# kept in the repository; distil-label scores only the queries they lack (resumable, ~6 s a query on
# 2 CPU cores). distil trains both students on them; eval-distil judges them on test queries only.
TEACHER_SCORES ?= benchmarks/teacher-scores/query-likelihood-gemma-3-270m.jsonl.gz
STUDENTS ?= runs/students
DISTIL_OPTIONS ?= --epochs 1 --sample 10
distil-label: setup
	$(BIN)/rag-rerank distil --teacher query-likelihood --data $(SHARED)/cranfield --data $(SHARED)/scifact \
		--depth 20 --scores $(TEACHER_SCORES) --label-only

distil: setup
	$(BIN)/rag-rerank distil --teacher query-likelihood --data $(SHARED)/cranfield --data $(SHARED)/scifact \
		--depth 20 --scores $(TEACHER_SCORES) --student cross-encoder --output $(STUDENTS)/cross-encoder $(DISTIL_OPTIONS)
	$(BIN)/rag-rerank distil --teacher query-likelihood --depth 20 --scores $(TEACHER_SCORES) \
		--student bi-encoder --output $(STUDENTS)/bi-encoder $(DISTIL_OPTIONS)

eval-distil: setup
	$(BIN)/rag-rerank eval $(foreach c,$(COLLECTIONS),--data $(SHARED)/$(c)) --depth 20 \
		--cross-encoder $(MODEL) --cross-encoder $(STUDENTS)/cross-encoder \
		--trained-on scifact=$(SHARED)/scifact/qrels/train.tsv --output runs/eval-distil
	$(BIN)/rag-rerank eval $(foreach c,$(COLLECTIONS),--data $(SHARED)/$(c)) --depth 20 \
		--bi-encoder $(STUDENTS)/bi-encoder --trained-on scifact=$(SHARED)/scifact/qrels/train.tsv \
		--output runs/eval-distil-bi-encoder
	$(BIN)/python benchmarks/compare_runs.py runs/eval-distil runs/eval-distil-bi-encoder --system hybrid --system dense

# Query latency (p50/p95) per first stage and for the whole pipeline, all six collections in one Chroma.
bench-latency: setup
	$(BIN)/python benchmarks/bench_latency.py

# Ray against in-process: ingest documents/s and rerank pairs/s with 1 and 2 actors (needs rag-rerank[ray]).
bench-ray: setup
	$(BIN)/python benchmarks/bench_ray.py

serve: setup
	$(BIN)/rag-rerank serve $(if $(CROSS_ENCODER),--cross-encoder $(CROSS_ENCODER))

clean:
	rm -rf $(VENV) $(SMOKE_VENV) $(PEERS_VENV) $(INFINITY_VENV) .chroma .pytest_cache dist site
