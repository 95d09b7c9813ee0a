"""Everything against a real Chroma server (`chroma run`, on a free loopback port, in a temporary
folder): the store, both adapters, the CLI and the rerank server; then the server is stopped and
started again, mid-suite and mid-ingest, to prove persistence, recovery and that nothing is lost."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from server_helpers import KEY, ChromaServer, Running
from store_helpers import versions_by_source, whole_text

from rag_rerank import ChromaStore, ChunkSpec, Document, StoreUnavailable


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    yield server
    server.stop()


@pytest.fixture
def quick_retries(monkeypatch):
    from rag_rerank.retrieval import chroma_client

    monkeypatch.setattr(chroma_client, "RETRY_DELAYS", (0.1, 0.2, 0.3))


CORPUS = [
    Document("Supersonic flutter of thin wing panels at high Mach numbers.", id="flutter", metadata={"year": 1958}),
    Document("Heat transfer in the laminar boundary layer of a flat plate.", id="heat", metadata={"year": 1960}),
    Document("Buckling of thin cylindrical shells under axial compression.", id="shell", metadata={"year": 1962}),
    Document("The zyxoquant coefficient of an unusual airfoil.", id="rare", metadata={"year": 1960}),
]


def server_store(chroma, bi_encoder, name, **kwargs) -> ChromaStore:
    return ChromaStore(name, host="localhost", port=chroma.port, bi_encoder=bi_encoder, **kwargs)


def test_the_store_on_a_server_ingests_filters_and_retrieves(chroma, bi_encoder):
    store = server_store(chroma, bi_encoder, "docs")
    assert store.path is None  # no local folder: the BM25 index lives in memory
    assert store.ingest(CORPUS).documents == 4 and store.count() == 4
    assert store.ingest(CORPUS).skipped == ["flutter", "heat", "shell", "rare"]  # nothing re-embedded
    assert [d.id for d in store.retrieve("zyxoquant coefficient", 2, mode="lexical")][:1] == ["rare"]
    assert store.retrieve("panel flutter", 1)[0].id == "flutter"  # hybrid
    assert {d.id for d in store.retrieve("thin", 4, where={"year": 1960})} <= {"heat", "rare"}
    store.ingest([Document("Now about magnetohydrodynamics.", id="rare")])  # re-ingest replaces
    assert store.retrieve("zyxoquant", 4, mode="lexical") == []
    store.delete(["rare"])
    assert store.count() == 3 and "rare" not in {d.id for d in store.retrieve("magnetohydrodynamics", 4)}
    another_client = server_store(chroma, bi_encoder, "docs")  # another process, as far as the first knows
    another_client.ingest([Document("quasicrystal lattices", id="new")])
    assert [d.id for d in store.retrieve("quasicrystal", 1, mode="lexical")] == ["new"]  # its BM25 saw the write


def test_both_adapters_and_the_cli_on_a_server(chroma, bi_encoder, tiny_reranker, tmp_path, capsys):
    from langchain_rag_rerank import RagRerankRetriever as LangChainRetriever
    from llama_index.retrievers.rag_rerank import RagRerankRetriever as LlamaIndexRetriever

    from rag_rerank.cli import main

    store = server_store(chroma, bi_encoder, "adapters")
    store.ingest(CORPUS)
    docs = LangChainRetriever(store=store, reranker=tiny_reranker, k=2, fetch_k=4).invoke("wing flutter")
    assert len(docs) == 2 and all(0 <= d.metadata["relevance_score"] <= 1 for d in docs)
    nodes = LlamaIndexRetriever(store, k=2).retrieve("boundary layer heat transfer")
    assert nodes[0].node.metadata["source_id"] == "heat"

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "c1", "text": "Shock waves in a supersonic nozzle."}\n')
    remote = ["--chroma-host", "localhost", "--chroma-port", str(chroma.port), "--collection", "cli-docs"]
    assert main(["ingest", str(corpus), *remote]) == 0
    assert main(["query", "nozzle shock", *remote, "--no-rerank", "--json"]) == 0
    assert '"id": "c1"' in capsys.readouterr().out


def test_the_rerank_server_on_a_chroma_server(chroma, bi_encoder, tiny_reranker):
    from rag_rerank.serve import ServerConfig, create_app

    server_store(chroma, bi_encoder, "served").ingest(CORPUS)
    config = ServerConfig(api_key=KEY, collection="served", chroma_host="localhost", chroma_port=chroma.port)
    running = Running(create_app(config, tiny_reranker))
    try:
        for rerank in (False, True):
            hits = httpx.post(
                f"{running.url}/v1/retrieve",
                json={"query": "cylindrical shells", "k": 4, "fetch_k": 4, "rerank": rerank},
                headers={"Authorization": f"Bearer {KEY}"},
            ).json()["results"]
            assert len(hits) == 4 and (rerank or hits[0]["id"] == "shell")
    finally:
        running.stop()


def test_a_restart_loses_nothing_and_clients_recover(chroma, bi_encoder, quick_retries, monkeypatch):
    from rag_rerank.retrieval import chroma_client

    store = server_store(chroma, bi_encoder, "restart")
    store.ingest(CORPUS)
    chroma.stop()
    with pytest.raises(StoreUnavailable, match=f"localhost:{chroma.port} did not answer.*chroma run"):
        store.count()  # while it is down: a clear error after the retries, not a hang
    chroma.start()
    assert store.count() == 4  # the same client, after the restart: the data persisted
    assert store.retrieve("zyxoquant", 1, mode="lexical")[0].id == "rare"
    monkeypatch.setattr(chroma_client, "RETRY_DELAYS", (0.25, 0.5, 1.0, 2.0, 4.0))  # the defaults: a restart fits
    restart_soon = threading.Timer(0.5, chroma.start)
    chroma.stop()
    restart_soon.start()  # back within the retry window: the call just waits for it
    assert store.count() == 4
    restart_soon.join()


def test_a_server_restart_mid_ingest_leaves_every_document_whole(chroma, bi_encoder, cranfield, quick_retries):
    corpus = cranfield.corpus[:80]
    store = server_store(chroma, bi_encoder, "mid-ingest", chunking=ChunkSpec(size=64, overlap=8))
    store.ingest(corpus)
    revised = [Document("Revised. " + d.text + " " + d.text[:150], id=d.id, metadata=d.metadata) for d in corpus]
    stopped = threading.Event()

    def stop_after_a_few_batches():
        time.sleep(1.0)
        chroma.stop()
        stopped.set()

    threading.Thread(target=stop_after_a_few_batches).start()
    with pytest.raises(StoreUnavailable):
        for start in range(0, len(revised), 4):
            store.ingest(revised[start : start + 4], batch_size=4)
    stopped.wait()
    chroma.start()

    old = {d.id: d.text for d in corpus}
    new = {d.id: d.text for d in revised}
    versions = versions_by_source(store)
    assert set(versions) == set(old), "a document was lost"
    seen = set()
    for source, by_version in versions.items():
        for chunks in by_version.values():
            text = whole_text(chunks)
            assert text in (old[source], new[source]), f"{source} is half-written"
            seen.add("new" if text == new[source] else "old")
    assert seen == {"old", "new"}, "the server did not stop mid-ingest"
    print(f"Chroma server killed mid-ingest, {len(corpus)} documents: lost 0, half-written 0")
    store.ingest(revised)  # the re-run finishes the job
    got = store._collection.get(include=["metadatas"])
    assert len({m["version"] for m in got["metadatas"] if m["source_id"] == corpus[0].id}) == 1
    assert store.retrieve("revised", 1, mode="lexical")[0].text.startswith("Revised.")
