"""LangChain's own standard test suites, run against our components."""

from __future__ import annotations

import tempfile
from functools import cache

from langchain_rag_rerank import RagRerankEmbeddings, RagRerankRetriever
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from rag_rerank import ChromaStore, Document


@cache
def _store() -> ChromaStore:
    store = ChromaStore("standard-tests", path=tempfile.mkdtemp(prefix="lc-standard-"))
    store.ingest([Document(f"passage {i} about aerodynamics of wings and shells", id=str(i)) for i in range(6)])
    return store


class TestRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagRerankRetriever]:
        return RagRerankRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"store": _store()}

    @property
    def retriever_query_example(self) -> str:
        return "wing aerodynamics"


class TestEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[RagRerankEmbeddings]:
        return RagRerankEmbeddings


class TestEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[RagRerankEmbeddings]:
        return RagRerankEmbeddings
