"""The real server on 127.0.0.1, spoken to by clients nobody here wrote: Cohere's SDK,
LangChain's and LlamaIndex's Cohere rerankers, and plain HTTP for the TEI shape."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from server_helpers import KEY, Running, free_port

from rag_rerank.serve import ServerConfig, create_app

DOCS = [
    "an experimental study of a wing in a propeller slipstream",
    "heat transfer in hypersonic flow",
    "buckling of thin cylindrical shells",
    "flutter of panels at supersonic speed ✈ — naïve café",
]


@pytest.fixture
def start(tiny_reranker, cranfield_store):
    running = []

    def _start(reranker=None, **settings):
        config = ServerConfig(
            cross_encoder="tiny",
            api_key=KEY,
            chroma_path=str(cranfield_store.path),
            collection=cranfield_store.collection_name,
            **settings,
        )
        server = Running(create_app(config, reranker or tiny_reranker))
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop()


def auth():
    return {"Authorization": f"Bearer {KEY}"}


def test_cohere_sdk_v1_and_v2(start, tiny_reranker):
    import cohere

    server = start()
    expected = sorted(range(len(DOCS)), key=lambda i: -tiny_reranker.score("wing", DOCS)[i])
    v2 = cohere.ClientV2(api_key=KEY, base_url=server.url)
    response = v2.rerank(model="rerank-v3.5", query="wing", documents=DOCS, top_n=3)
    assert [r.index for r in response.results] == expected[:3]
    assert all(0 < r.relevance_score < 1 for r in response.results)
    v1 = cohere.Client(api_key=KEY, base_url=server.url)
    response = v1.rerank(model="rerank-english-v3.0", query="wing", documents=DOCS, return_documents=True)
    assert [r.index for r in response.results] == expected
    assert [r.document.text for r in response.results] == [DOCS[i] for i in expected]


def test_langchain_and_llama_index_cohere_rerankers_accept_our_base_url(start):
    from langchain_cohere import CohereRerank as LangChainCohereRerank
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaCohereRerank

    server = start()
    lc = LangChainCohereRerank(cohere_api_key=KEY, base_url=server.url, model="rerank-english-v3.0", top_n=2)
    out = lc.compress_documents([Document(page_content=d) for d in DOCS], "wing")
    assert len(out) == 2 and all("relevance_score" in d.metadata for d in out)
    li = LlamaCohereRerank(api_key=KEY, base_url=server.url, top_n=2, max_retries=1)
    nodes = li.postprocess_nodes([NodeWithScore(node=TextNode(text=d)) for d in DOCS], query_str="wing")
    assert len(nodes) == 2 and nodes[0].score >= nodes[1].score


def test_tei_shape(start, tiny_reranker):
    server = start()
    raw = httpx.post(
        f"{server.url}/rerank",
        json={"query": "wing", "texts": DOCS, "raw_scores": True, "return_text": True},
        headers=auth(),
    )
    assert raw.status_code == 200
    body = raw.json()
    assert sorted(item["index"] for item in body) == [0, 1, 2, 3]
    scores = tiny_reranker.score("wing", DOCS)
    assert [item["score"] for item in body] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    assert body[0]["text"] == DOCS[body[0]["index"]]
    normalized = httpx.post(f"{server.url}/rerank", json={"query": "wing", "texts": DOCS}, headers=auth()).json()
    assert all(0 < item["score"] < 1 and "text" not in item for item in normalized)


@pytest.mark.parametrize(
    "payload,status,message",
    [
        (b"{not json", 422, "invalid request"),
        (json.dumps({"query": "q", "documents": "not a list"}).encode(), 422, "documents"),
        (json.dumps({"query": 5, "documents": ["a"]}).encode(), 422, "query"),
        (json.dumps({"query": "q", "documents": ["a", "  "]}).encode(), 422, "document 1 is empty"),
        (json.dumps({"query": "", "documents": ["a"]}).encode(), 422, "query is empty"),
        (json.dumps({"query": "q", "documents": ["a"], "top_n": 0}).encode(), 422, "top_n"),
        (json.dumps({"query": "q", "documents": ["d"] * 11}).encode(), 413, "the limit is 10 per request"),
        (json.dumps({"query": "q", "documents": ["x" * 201]}).encode(), 413, "the limit is 200"),
    ],
)
def test_bad_input_gets_a_clear_status_and_message(start, payload, status, message):
    server = start(max_documents=10, max_document_chars=200)
    response = httpx.post(
        f"{server.url}/v1/rerank", content=payload, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert message in response.json()["message"]


def test_empty_documents_give_empty_results(start):
    server = start()
    response = httpx.post(f"{server.url}/v2/rerank", json={"query": "q", "documents": []}, headers=auth())
    assert response.status_code == 200 and response.json()["results"] == []


def test_oversized_body_is_refused_before_parsing(start):
    server = start(max_request_bytes=1000)
    response = httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": ["x" * 2000]}, headers=auth())
    assert response.status_code == 413 and "the limit is 1000" in response.json()["message"]


def test_auth(start):
    server = start()
    assert httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 401
    wrong = httpx.post(
        f"{server.url}/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_metrics_and_openapi(start):
    server = start()
    httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": DOCS}, headers=auth())
    text = httpx.get(f"{server.url}/metrics").text
    assert 'rag_rerank_requests_total{path="/v1/rerank",status="200"} 1' in text
    assert "rag_rerank_pairs_scored_total 4" in text
    assert "/v2/rerank" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_full_queue_answers_503_with_retry_after(start, minilm_cross_encoder_path):
    from rag_rerank import CrossEncoderReranker

    slow = CrossEncoderReranker(minilm_cross_encoder_path, device="cpu", backend="torch")  # ~1 s per request below
    server = start(reranker=slow, max_queue=1, max_batch_pairs=1)
    documents = [" ".join(["turbulent boundary layer"] * 40)] * 40

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": documents}, headers=auth())
                    for _ in range(8)
                )
            )

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1" and "queue is full" in rejected.json()["message"]


def test_concurrent_requests_share_model_batches(start):
    server = start()

    async def many():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{server.url}/v1/rerank", json={"query": f"q{i}", "documents": DOCS}, headers=auth())
                    for i in range(30)
                )
            )

    assert all(r.status_code == 200 for r in asyncio.run(many()))
    text = httpx.get(f"{server.url}/metrics").text
    batches = int(next(line.split()[-1] for line in text.splitlines() if line.startswith("rag_rerank_batches_total")))
    assert "rag_rerank_pairs_scored_total 120" in text and batches < 30


def test_retrieve_and_query_over_a_collection(start, openai_server, cranfield_store, tiny_reranker):
    from rag_rerank import relevance, two_stage_search

    server = start(llm_base_url=openai_server.base_url, llm_model="stub-model")
    hits = httpx.post(
        f"{server.url}/v1/retrieve", json={"query": "wing slipstream", "k": 3, "fetch_k": 10}, headers=auth()
    ).json()["results"]
    # the library's two-stage search, the same ids in the same order with the same scores
    library = two_stage_search(cranfield_store, "wing slipstream", k=3, reranker=tiny_reranker, fetch_k=10)
    assert [h["id"] for h in hits] == [doc.id for doc, _ in library]
    assert [h["relevance_score"] for h in hits] == pytest.approx([relevance(d.score, d.score_kind) for d, _ in library])
    assert [h["retrieval_score"] for h in hits] == pytest.approx([retrieval for _, retrieval in library])
    plain = httpx.post(
        f"{server.url}/v1/retrieve", json={"query": "wing slipstream", "k": 2, "rerank": False}, headers=auth()
    ).json()
    assert [h["relevance_score"] for h in plain["results"]] == [None, None]

    answer = httpx.post(f"{server.url}/v1/query", json={"query": "wing slipstream", "k": 2}, headers=auth()).json()
    assert answer["answer"] and [s["citation"] for s in answer["sources"]] == [1, 2]
    assert "[1]" in openai_server.requests[-1]["body"]["messages"][0]["content"]
    assert openai_server.requests[-1]["body"]["max_tokens"] == 256  # --llm-max-tokens' default bounds the answer

    with httpx.stream(
        "POST", f"{server.url}/v1/query", json={"query": "wing slipstream", "k": 2, "stream": True}, headers=auth()
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.split(": ", 1)[1] for line in response.iter_lines() if line.startswith("event: ")]
    assert events[0] == "sources" and "token" in events and events[-1] == "done"


def test_query_answers_with_a_real_llm(start, llama_server):
    """/v1/query against llama.cpp's OpenAI-compatible server serving SmolLM2: a generated answer (not a
    stub's), streamed and whole, with the packed sources cited."""
    server = start(llm_base_url=llama_server, llm_model="smollm2-135m-instruct")
    body = {"query": "what is the effect of the slipstream on a wing", "k": 2}
    answer = httpx.post(f"{server.url}/v1/query", json=body, headers=auth(), timeout=120).json()
    assert len(answer["answer"].split()) >= 3 and [s["citation"] for s in answer["sources"]] == [1, 2]
    with httpx.stream(
        "POST", f"{server.url}/v1/query", json={**body, "stream": True}, headers=auth(), timeout=120
    ) as response:
        events = [line.split(": ", 1)[1] for line in response.iter_lines() if line.startswith("event: ")]
    assert events[0] == "sources" and events.count("token") >= 3 and events[-1] == "done"
    short = start(llm_base_url=llama_server, llm_model="smollm2-135m-instruct", llm_max_tokens=4)
    answer = httpx.post(f"{short.url}/v1/query", json=body, headers=auth(), timeout=120).json()["answer"]
    assert 1 <= len(answer.split()) <= 4  # the server stops at --llm-max-tokens (every word is a token or more)


def test_an_llm_slower_than_the_timeout_is_a_504_naming_the_limit_and_the_fix(start, openai_server):
    """Not a bare 502: the LLM was reached, it is too slow for --timeout; the message says which LLM,
    which limit and what to change, in the response and in the stream's error event alike."""
    server = start(llm_base_url=openai_server.base_url, llm_model="stub-model", request_timeout=1, llm_max_tokens=64)
    openai_server.delay = 3
    body = {"query": "wing slipstream", "k": 2}
    response = httpx.post(f"{server.url}/v1/query", json=body, headers=auth(), timeout=30)
    message = response.json()["message"]
    assert response.status_code == 504 and f"{openai_server.base_url}/chat/completions" in message
    assert "1s (--timeout)" in message and "64 tokens (--llm-max-tokens)" in message and "faster LLM" in message
    assert openai_server.requests[-1]["body"]["max_tokens"] == 64
    with httpx.stream(
        "POST", f"{server.url}/v1/query", json={**body, "stream": True}, headers=auth(), timeout=30
    ) as streamed:
        lines = [line.split(": ", 1) for line in streamed.iter_lines() if line.startswith(("event: ", "data: "))]
    assert streamed.status_code == 200 and [value for key, value in lines if key == "event"] == ["sources", "error"]
    assert json.loads(lines[-1][1]) == {"message": message, "status": 504}


def test_retrieve_returns_whole_documents_from_any_first_stage(start):
    server = start()
    for mode in ("hybrid", "dense", "lexical"):
        for rerank in (True, False):
            body = {
                "query": "pressure on a wing in supersonic flow",
                "k": 8,
                "fetch_k": 12,
                "mode": mode,
                "rerank": rerank,
            }
            hits = httpx.post(f"{server.url}/v1/retrieve", json=body, headers=auth()).json()["results"]
            ids = [h["id"] for h in hits]
            assert hits and len(ids) == len(set(ids)), (mode, rerank)
            assert all(h["metadata"]["chunk_id"].startswith(h["id"] + "#") for h in hits)
    lexical = httpx.post(
        f"{server.url}/v1/retrieve", json={"query": "wing", "mode": "lexical", "rerank": False}, headers=auth()
    ).json()["results"]
    assert all(h["metadata"]["dense_score"] is None and h["retrieval_score"] > 0 for h in lexical)
    chunks = httpx.post(
        f"{server.url}/v1/retrieve", json={"query": "wing", "chunks": True, "rerank": False}, headers=auth()
    ).json()["results"]
    assert all("#" in h["id"] for h in chunks)
    bad = httpx.post(f"{server.url}/v1/retrieve", json={"query": "wing", "mode": "sparse"}, headers=auth())
    assert bad.status_code == 422 and "mode" in bad.text


def test_query_without_llm_says_how_to_configure(start):
    server = start()
    response = httpx.post(f"{server.url}/v1/query", json={"query": "wing"}, headers=auth())
    assert response.status_code == 501 and "--llm-base-url" in response.json()["message"]
    sources = httpx.post(
        f"{server.url}/v1/query", json={"query": "wing", "generate": False, "k": 2}, headers=auth()
    ).json()
    assert sources["answer"] is None and len(sources["sources"]) == 2


def test_serve_command_configures_from_flags_and_env_and_shuts_down_gracefully(tiny_cross_encoder_path, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "RAG_RERANK_API_KEY": KEY, "RAG_RERANK_MAX_DOCUMENTS": "3", "RAG_RERANK_CACHE_SIZE": "10"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rag_rerank.cli",
            "serve",
            "--cross-encoder",
            tiny_cross_encoder_path,
            "--port",
            str(port),
            "--chroma-path",
            str(tmp_path / "chroma"),
            "--dtype",
            "bfloat16",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:  # /health answers earlier, while loading
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.2)
        assert httpx.get(f"{url}/health").json()["dtype"] == "bfloat16"
        assert (
            httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 401
        )  # key from env
        too_many = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"] * 4}, headers=auth())
        assert too_many.status_code == 413 and "the limit is 3" in too_many.json()["message"]
        assert (
            httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, headers=auth()).status_code
            == 200
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    # uvicorn drains, runs the shutdown, then re-raises SIGTERM so supervisors see the usual exit
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "request" and entry.get("status") == 200 for entry in logged)
    assert logged[-1]["event"] == "stopped"


def test_serve_compile_comes_from_the_flag_or_the_environment(monkeypatch):
    from rag_rerank.cli import build_parser

    assert build_parser().parse_args(["serve"]).compile is False
    assert build_parser().parse_args(["serve", "--compile"]).compile is True
    monkeypatch.setenv("RAG_RERANK_COMPILE", "true")
    assert build_parser().parse_args(["serve"]).compile is True


def test_a_normalizing_reranker_gets_the_sigmoid_once(start, tiny_cross_encoder_path):
    from rag_rerank import CrossEncoderReranker
    from rag_rerank.scores import sigmoid

    normalizing = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", normalize=True, backend="torch")
    plain = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")
    server = start(reranker=normalizing)
    docs = ["wing in a slipstream", "buckling of shells", "heat in slabs"]
    body = {"query": "wing", "documents": docs, "top_n": 3}
    results = httpx.post(f"{server.url}/v1/rerank", json=body, headers=auth()).json()["results"]
    expected = [sigmoid(x) for x in plain.score("wing", docs)]
    assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(dict(enumerate(expected)))


# ---- reliability: bad clients, bad settings, failures (#15) ----------------------------


def test_an_empty_api_key_refuses_to_start(tiny_reranker):
    with pytest.raises(ValueError, match="API key is empty"):
        create_app(ServerConfig(api_key=""), tiny_reranker)
    with pytest.raises(ValueError, match="API key is empty"):
        create_app(ServerConfig(api_key="   "), tiny_reranker)


def test_a_chunked_body_over_the_limit_is_refused(start):
    server = start(max_request_bytes=1000)
    body = json.dumps({"query": "q", "documents": ["x" * 3000]}).encode()

    def chunks():  # no Content-Length: the body arrives in pieces
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    response = httpx.post(
        f"{server.url}/v1/rerank", content=chunks(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "--max-request-bytes" in response.json()["message"]
    small = json.dumps({"query": "q", "documents": ["wing"]}).encode()
    ok = httpx.post(
        f"{server.url}/v1/rerank", content=iter([small]), headers={**auth(), "Content-Type": "application/json"}
    )
    assert ok.status_code == 200


def test_queries_are_limited_in_characters_and_tokens(start):
    server = start(max_query_chars=1000, max_query_tokens=50)
    long = httpx.post(f"{server.url}/v1/rerank", json={"query": "wing " * 400, "documents": ["a"]}, headers=auth())
    assert long.status_code == 413 and "--max-query-chars" in long.json()["message"]
    wordy = httpx.post(f"{server.url}/v1/rerank", json={"query": "wing " * 100, "documents": ["a"]}, headers=auth())
    assert wordy.status_code == 413 and "--max-query-tokens" in wordy.json()["message"]
    retrieve = httpx.post(f"{server.url}/v1/retrieve", json={"query": "wing " * 100}, headers=auth())
    assert retrieve.status_code == 413


def test_only_served_collections_are_opened_never_created(start, cranfield_store):
    server = start()
    before = {c.name for c in cranfield_store.client.list_collections()}
    for name in ("nope", "x", "../../etc", "a" * 300):
        response = httpx.post(f"{server.url}/v1/retrieve", json={"query": "wing", "collection": name}, headers=auth())
        assert response.status_code == 404 and "not served" in response.json()["message"], name
    assert {c.name for c in cranfield_store.client.list_collections()} == before  # nothing created on disk
    cranfield_store.client.get_or_create_collection("existing-one")  # made by someone else, e.g. an ingest
    served = start(serve_existing_collections=True)
    found = httpx.post(
        f"{served.url}/v1/retrieve", json={"query": "wing", "collection": "existing-one"}, headers=auth()
    )
    assert found.status_code == 200 and found.json()["results"] == []
    missing = httpx.post(f"{served.url}/v1/retrieve", json={"query": "wing", "collection": "nope"}, headers=auth())
    assert missing.status_code == 404


def test_metrics_label_routes_not_raw_paths_and_can_need_the_key(start):
    server = start(metrics_need_key=True)
    for i in range(5):
        assert httpx.get(f"{server.url}/scan/probe{i}").status_code == 404
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200 and httpx.get(f"{server.url}/ready").status_code == 200
    text = httpx.get(f"{server.url}/metrics", headers=auth()).text
    assert 'path="unmatched",status="404"} 5' in text and "probe" not in text


class FailingReranker:
    """A real reranker that fails on one query: a model bug, as a 5xx must be reported."""

    def __new__(cls, path):
        from rag_rerank import CrossEncoderReranker

        class Failing(CrossEncoderReranker):
            def score_pairs(self, pairs, *, logits=False):
                if any(query == "boom" for query, _ in pairs):
                    raise RuntimeError("the model broke")
                return super().score_pairs(pairs, logits=logits)

        return Failing(path, device="cpu")


def test_a_server_error_is_json_with_a_request_id_counted_and_logged(start, tiny_cross_encoder_path, caplog):
    server = start(reranker=FailingReranker(tiny_cross_encoder_path))
    response = httpx.post(
        f"{server.url}/v1/rerank",
        json={"query": "boom", "documents": ["a"]},
        headers={**auth(), "X-Request-ID": "abc-123"},
    )
    assert response.status_code == 500 and "abc-123" in response.json()["message"]
    assert response.headers["x-request-id"] == "abc-123"
    fine = httpx.post(f"{server.url}/v1/rerank", json={"query": "wing", "documents": ["a"]}, headers=auth())
    assert fine.status_code == 200 and len(fine.headers["x-request-id"]) == 32  # one is made when none is sent
    assert "rag_rerank_server_errors_total 1" in httpx.get(f"{server.url}/metrics").text
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"event": "request"')]
    assert any(e["request_id"] == "abc-123" and e["status"] == 500 and e["route"] == "/v1/rerank" for e in logged)


def test_an_unreachable_llm_is_a_502_not_a_bare_500(start):
    server = start(llm_base_url=f"http://127.0.0.1:{free_port()}/v1", llm_model="m")
    response = httpx.post(f"{server.url}/v1/query", json={"query": "wing slipstream", "k": 2}, headers=auth())
    assert response.status_code == 502 and "ConnectError" in response.json()["message"]
    with httpx.stream(
        "POST", f"{server.url}/v1/query", json={"query": "wing", "k": 2, "stream": True}, headers=auth()
    ) as streamed:
        error = [line for line in streamed.iter_lines() if line.startswith("data: ")][-1]
    assert json.loads(error[6:])["status"] == 502


def test_readiness_waits_for_the_model_and_reports_a_failed_load(tiny_reranker):
    from fastapi.testclient import TestClient

    waiting = TestClient(create_app(ServerConfig(), tiny_reranker))  # no lifespan: the model never loads
    assert waiting.get("/health").json()["ready"] is False
    assert waiting.get("/ready").status_code == 503
    early = waiting.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert early.status_code == 503 and early.headers["retry-after"] == "2"
    with TestClient(create_app(ServerConfig(cross_encoder="/no/such/model"))) as broken:
        deadline = time.time() + 30
        while broken.get("/ready").status_code == 503 and time.time() < deadline:
            time.sleep(0.05)
        failed = broken.get("/ready")
        assert failed.status_code == 500 and "/no/such/model" in failed.json()["message"]
        assert broken.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 500


def test_cohere_max_tokens_per_doc_and_tei_truncate_are_honoured(start, tiny_reranker):
    server = start()
    text = "heat transfer in hypersonic flow over an experimental wing in a propeller slipstream"
    clipped = tiny_reranker.clip(text, 4)
    assert text.startswith(clipped) and len(clipped) < len(text) and tiny_reranker.token_count(clipped) == 4
    got = httpx.post(
        f"{server.url}/v2/rerank", json={"query": "wing", "documents": [text], "max_tokens_per_doc": 4}, headers=auth()
    ).json()["results"][0]["relevance_score"]
    from rag_rerank.scores import sigmoid

    assert got == pytest.approx(sigmoid(tiny_reranker.score("wing", [clipped])[0]), abs=1e-5)
    assert got != pytest.approx(sigmoid(tiny_reranker.score("wing", [text])[0]), abs=1e-5)
    long = "wing " * (tiny_reranker.max_length + 10)
    refused = httpx.post(
        f"{server.url}/rerank", json={"query": "q", "texts": [long], "truncate": False}, headers=auth()
    )
    assert refused.status_code == 413 and "truncate=true" in refused.json()["message"]
    assert httpx.post(f"{server.url}/rerank", json={"query": "q", "texts": [long]}, headers=auth()).status_code == 200


def test_truncation_is_said_in_the_response(start, tiny_reranker):
    server = start()
    long = "wing " * (tiny_reranker.max_length + 10)
    cohere = httpx.post(f"{server.url}/v2/rerank", json={"query": "wing", "documents": [long, "short"]}, headers=auth())
    assert cohere.headers["x-truncated-documents"] == "1"
    assert "1 document(s) longer than the model reads" in cohere.json()["meta"]["warnings"][0]
    tei = httpx.post(f"{server.url}/rerank", json={"query": "wing", "texts": ["short"]}, headers=auth())
    assert tei.headers["x-truncated-documents"] == "0"


class SlowReranker:
    """A real reranker that takes 1.5 s on one query: a busy model, to queue others behind it."""

    def __new__(cls, path):
        from rag_rerank import CrossEncoderReranker

        class Slow(CrossEncoderReranker):
            def score_pairs(self, pairs, *, logits=False):
                if any(query == "slow" for query, _ in pairs):
                    time.sleep(1.5)
                return super().score_pairs(pairs, logits=logits)

        return Slow(path, device="cpu")


def test_a_client_that_hangs_up_costs_the_model_nothing(start, tiny_cross_encoder_path):
    import threading

    server = start(reranker=SlowReranker(tiny_cross_encoder_path))
    busy = threading.Thread(
        target=httpx.post,
        args=(f"{server.url}/v1/rerank",),
        kwargs={"json": {"query": "slow", "documents": ["a", "b"]}, "headers": auth(), "timeout": 30},
    )
    busy.start()
    time.sleep(0.3)  # the model is now busy with the slow request
    with pytest.raises(httpx.ReadTimeout):  # this client gives up while its request waits in the queue
        httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": DOCS}, headers=auth(), timeout=0.3)
    busy.join()
    time.sleep(0.3)
    text = httpx.get(f"{server.url}/metrics").text
    assert "rag_rerank_pairs_scored_total 2" in text  # only the slow request's pairs were scored
    assert 'path="/v1/rerank",status="499"} 1' in text


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("/v1/rerank", '{"query": "wing \\ud800", "documents": ["a"]}', "body.query"),
        ("/v2/rerank", '{"query": "wing", "documents": ["a", "b \\udfff"]}', "body.documents.1"),
        ("/v2/rerank", '{"query": "wing", "documents": [{"text": "\\ud800"}]}', "body.documents.0"),
        ("/rerank", '{"query": "wing", "texts": ["\\ud800 b"]}', "body.texts.0"),
        ("/rerank", '{"query": "\\ud800", "texts": ["b"]}', "body.query"),
        ("/v1/retrieve", '{"query": "wing \\ud800"}', "body.query"),
        ("/v1/query", '{"query": "wing \\ud800", "generate": false}', "body.query"),
    ],
)
def test_text_that_is_not_valid_unicode_is_a_422_naming_the_field(start, route, body, field):
    """JSON's "\\ud800" parses to a lone surrogate, which the tokenizer fails on (it was a 500)."""
    server = start()
    response = httpx.post(
        f"{server.url}{route}", content=body.encode(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert field in response.json()["message"] and "not valid Unicode" in response.json()["message"]


def test_a_model_giving_nan_is_a_500_that_says_so_never_a_score(start, nan_reranker):
    server = start(reranker=nan_reranker)  # its warm-up pair scores right: the broken path shows later
    for route, body in [
        ("/v2/rerank", {"query": "wing", "documents": DOCS}),
        ("/rerank", {"query": "w", "texts": DOCS}),
    ]:
        response = httpx.post(f"{server.url}{route}", json=body, headers=auth())
        assert response.status_code == 500
        assert "NaN or infinite logits" in response.json()["message"] and "backend='onnx'" in response.json()["message"]


def test_retrieve_with_a_reranker_fused_with_the_first_stage_ranks_and_scores_as_the_library(
    start, cranfield_store, tiny_cross_encoder_path
):
    """A distilled student fuses its logits with the retrieval scores: the server's hits are the library's,
    in order, with the fused score (0..1 already) as relevance, not a sigmoid of it."""
    from rag_rerank import CrossEncoderReranker, two_stage_search

    fused = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch", fusion_weight=0.5)
    server = start(reranker=fused)
    hits = httpx.post(
        f"{server.url}/v1/retrieve", json={"query": "wing slipstream", "k": 4, "fetch_k": 10}, headers=auth()
    ).json()["results"]
    library = two_stage_search(cranfield_store, "wing slipstream", k=4, reranker=fused, fetch_k=10)
    assert {d.score_kind for d, _ in library} == {"fused"}
    assert [h["id"] for h in hits] == [doc.id for doc, _ in library]
    assert [h["relevance_score"] for h in hits] == pytest.approx([doc.score for doc, _ in library])
    assert hits[0]["relevance_score"] == pytest.approx(max(d.score for d, _ in library))
