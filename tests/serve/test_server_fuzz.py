"""The server fuzzed from its own OpenAPI schema (schemathesis + hypothesis): whatever a client
sends, valid by the schema or not, the answer is never a 5xx and never hangs."""

from __future__ import annotations

import itertools

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from server_helpers import KEY, Running

EXAMPLES = 25  # per operation


def test_no_input_gets_a_server_error_or_hangs(tiny_reranker, cranfield_store, openai_server):
    from rag_rerank.serve import ServerConfig, create_app

    config = ServerConfig(
        cross_encoder="tiny",
        api_key=KEY,
        chroma_path=str(cranfield_store.path),
        collection=cranfield_store.collection_name,
        llm_base_url=openai_server.base_url,
        llm_model="stub-model",
        max_documents=20,
        max_document_chars=2000,
        request_timeout=20,
    )
    server = Running(create_app(config, tiny_reranker))
    tried: dict[str, int] = {}
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        for result, mode in itertools.product(schema.get_all_operations(), GenerationMode):
            operation = result.ok()  # valid requests, and requests that break the schema on purpose

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case):
                label = f"{case.operation.method.upper()} {case.operation.path}"
                response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
                tried[label] = tried.get(label, 0) + 1
                assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"

            try:
                call()
            except Unsatisfiable:  # no way to break the schema of an operation without inputs (GET /health)
                assert mode is GenerationMode.NEGATIVE
    finally:
        server.stop()
    assert len(tried) == 8, tried  # every operation was fuzzed
    print(f"fuzzed {sum(tried.values())} requests over {len(tried)} operations: no 5xx, no hang")
