"""Hybrid retrieval on a real Chroma store: the BM25 index follows every write, documents come back once."""

import pytest

from rag_rerank import ChromaStore, ChunkSpec, Document

CORPUS = [
    Document("Supersonic flutter of thin wing panels at high Mach numbers.", id="flutter"),
    Document("Heat transfer in the laminar boundary layer of a flat plate.", id="heat"),
    Document("Buckling of thin cylindrical shells under axial compression.", id="shell"),
    Document("The zyxoquant coefficient of an unusual airfoil.", id="rare"),
]


@pytest.fixture
def store(tmp_path, bi_encoder):
    store = ChromaStore("hybrid", path=tmp_path / "chroma", bi_encoder=bi_encoder)
    store.ingest(CORPUS)
    return store


def ids(docs):
    return [doc.id for doc in docs]


def test_modes_and_scores(store):
    lexical = store.retrieve("zyxoquant coefficient", 4, mode="lexical")
    assert ids(lexical)[0] == "rare" and lexical[0].metadata["dense_score"] is None
    assert lexical[0].score == lexical[0].metadata["lexical_score"] > 0
    dense = store.retrieve("panel flutter", 4, mode="dense")
    assert dense[0].score == pytest.approx(dense[0].metadata["dense_score"]) and -1 <= dense[0].score <= 1
    hybrid = store.retrieve("zyxoquant coefficient", 4)
    assert ids(hybrid)[0] == "rare"
    assert hybrid[0].metadata["dense_score"] is not None and hybrid[0].metadata["lexical_score"] is not None
    assert all(doc.metadata["chunk_id"].startswith(doc.id + "#") for doc in hybrid)
    weighted = store.retrieve("zyxoquant coefficient", 4, fusion_method="weighted", dense_weight=0.0)
    assert ids(weighted)[0] == "rare" and weighted[0].score == pytest.approx(1.0)


def test_lexical_index_follows_ingest_reingest_and_delete(store):
    assert store.retrieve("quasicrystal", 4, mode="lexical") == []
    store.ingest([Document("A quasicrystal lattice in alloys.", id="new")])
    assert ids(store.retrieve("quasicrystal", 4, mode="lexical")) == ["new"]
    store.ingest([Document("Now about magnetohydrodynamics instead.", id="new")])  # re-ingest replaces
    assert store.retrieve("quasicrystal", 4, mode="lexical") == []
    assert ids(store.retrieve("magnetohydrodynamics", 4, mode="lexical")) == ["new"]
    store.delete(["new"])
    assert store.retrieve("magnetohydrodynamics", 4, mode="lexical") == []
    assert "new" not in ids(store.retrieve("magnetohydrodynamics", 10))


def test_lexical_index_survives_a_restart_and_sees_other_writers(tmp_path, bi_encoder):
    path = tmp_path / "chroma"
    ChromaStore("hybrid", path=path, bi_encoder=bi_encoder).ingest(CORPUS)
    first = ChromaStore("hybrid", path=path, bi_encoder=bi_encoder)
    assert ids(first.retrieve("zyxoquant", 1, mode="lexical")) == ["rare"]
    assert (path / "lexical" / "hybrid" / "index.json").exists()
    # a second client (another process, as far as the first can tell) writes
    ChromaStore("hybrid", path=path, bi_encoder=bi_encoder).ingest([Document("zyxoquant again", id="other")])
    assert set(ids(first.retrieve("zyxoquant", 4, mode="lexical"))) == {"rare", "other"}
    reopened = ChromaStore("hybrid", path=path, bi_encoder=bi_encoder)
    assert reopened._lexical.version is not None  # loaded from disk, not rebuilt
    assert set(ids(reopened.retrieve("zyxoquant", 4, mode="lexical"))) == {"rare", "other"}


def test_a_damaged_saved_index_is_rebuilt(tmp_path, bi_encoder):
    path = tmp_path / "chroma"
    ChromaStore("hybrid", path=path, bi_encoder=bi_encoder).ingest(CORPUS)
    ChromaStore("hybrid", path=path, bi_encoder=bi_encoder).retrieve("zyxoquant", 1)
    (path / "lexical" / "hybrid" / "index.json").write_text("{not json")
    assert ids(ChromaStore("hybrid", path=path, bi_encoder=bi_encoder).retrieve("zyxoquant", 1, mode="lexical")) == [
        "rare"
    ]


def test_filters_apply_to_both_sides(store):
    hits = store.retrieve("zyxoquant flutter", 4, where={"source_id": {"$in": ["flutter", "heat"]}})
    assert hits and set(ids(hits)) <= {"flutter", "heat"}


def test_no_document_appears_twice(tmp_path, bi_encoder):
    store = ChromaStore("long", path=tmp_path / "c", bi_encoder=bi_encoder, chunking=ChunkSpec(size=40, overlap=8))
    long = " ".join(f"Wing flutter sentence {i} at transonic speed." for i in range(40))
    store.ingest([Document(long, id="long"), *CORPUS])
    for mode in ("hybrid", "dense", "lexical"):
        found = ids(store.retrieve("wing flutter transonic", 10, mode=mode))
        assert len(found) == len(set(found)) and "long" in found, mode
    chunks = store.retrieve("wing flutter transonic", 10, mode="dense", chunks=True)
    assert sum(doc.metadata["source_id"] == "long" for doc in chunks) > 1
    best = store.retrieve("wing flutter transonic", 1)[0]
    span = best.metadata["char_start"], best.metadata["char_end"]
    assert long[span[0] : span[1]] == best.text


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="mode must be one of"):
        store.retrieve("q", 3, mode="sparse")
    with pytest.raises(ValueError, match="fusion_method"):
        store.retrieve("q", 3, fusion_method="max")
    with pytest.raises(ValueError, match="dense_weight"):
        store.retrieve("q", 3, dense_weight=2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        store.retrieve("q", 0)


def test_every_chunk_fits_the_bi_encoder(tmp_path, bi_encoder, cranfield):
    store = ChromaStore("fit", path=tmp_path / "c", bi_encoder=bi_encoder, chunking=ChunkSpec(size=512, overlap=32))
    docs = sorted(cranfield.corpus, key=lambda d: -len(d.text))[:15]
    store.ingest(docs)
    _, chunks = store.all_chunks()
    assert len(chunks) > len(docs), "512 tiktoken tokens exceed MiniLM's 256 word pieces: long abstracts split"
    assert all(bi_encoder.fits(chunk) for chunk in chunks)


def test_join_chunks_gives_back_the_source(cranfield):
    from rag_rerank.retrieval.chunking import chunk_spans
    from rag_rerank.retrieval.lexical import join_chunks

    spec = ChunkSpec(size=40, overlap=10)
    for doc in cranfield.corpus[:50]:
        spans = chunk_spans(doc.text, spec)
        texts = [doc.text[begin:end] for begin, end in spans]
        starts = [begin for begin, _ in spans]
        assert join_chunks(texts[::-1], starts[::-1]) == doc.text[spans[0][0] : spans[-1][1]]


def test_bm25_scores_whole_documents_and_names_the_best_chunk(tmp_path, bi_encoder):
    """Query terms in different chunks of one document: chunk-level BM25 cannot see both, the
    document-level score does; the result still points at the chunk that matched best."""
    filler = " ".join(f"word{i}" for i in range(60))
    split = Document(f"ornithopter gearing {filler} {filler} {filler} {filler} ornithopter wingbeat", id="split")
    single = Document("ornithopter gearing only", id="single")
    store = ChromaStore("docs", path=tmp_path / "c", bi_encoder=bi_encoder, chunking=ChunkSpec(size=64, overlap=8))
    store.ingest([split, single])
    assert len(store.all_chunks()[0]) > 3  # the two query terms really are chunks apart
    by_chunk = [
        d
        for d in store.retrieve("gearing wingbeat", 10, mode="lexical", chunks=True)
        if d.metadata["source_id"] != "single"
    ]
    assert not any("gearing" in d.text and "wingbeat" in d.text for d in by_chunk)  # one term per chunk
    by_document = store.retrieve("gearing wingbeat", 5, mode="lexical")
    assert ids(by_document) == ["split", "single"]
    assert by_document[0].metadata["chunk_id"] == by_chunk[0].id  # the passage that matched best
    filtered = store.retrieve("gearing wingbeat", 5, mode="lexical", where={"source_id": "single"})
    assert ids(filtered) == ["single"] and filtered[0].metadata["chunk_id"].startswith("single#0@")


def test_every_result_says_what_its_score_is(store, tiny_reranker):
    from rag_rerank import relevance

    kinds = {
        (mode, fusion): {doc.score_kind for doc in store.retrieve("wing flutter", 4, mode=mode, fusion_method=fusion)}
        for mode in ("dense", "lexical", "hybrid")
        for fusion in ("weighted", "rrf")
    }
    assert kinds[("dense", "weighted")] == {"cosine"} and kinds[("lexical", "rrf")] == {"bm25"}
    assert kinds[("hybrid", "weighted")] == {"fused"} and kinds[("hybrid", "rrf")] == {"rrf"}
    assert {d.score_kind for d in store.query("wing", 2)} == {"cosine"}
    ranked = tiny_reranker.rerank("wing flutter", store.retrieve("wing flutter", 4))
    assert {d.score_kind for d in ranked} == {"logit"}
    assert all(0 < relevance(d.score, d.score_kind) < 1 for d in ranked)
    assert relevance(7.0, "rating") == 0.7 and relevance(-3.0, "rating") == 0.0 and relevance(0.25, "position") == 0.25
    with pytest.raises(ValueError, match="no 0..1 relevance scale"):
        relevance(12.0, "bm25")
