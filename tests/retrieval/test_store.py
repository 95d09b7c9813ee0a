import pytest
from cpu_helpers import openvino_has_bfloat16

from rag_rerank import ChromaStore, ChunkSpec, Document


def test_query_returns_scored_chunks_best_first(cranfield_store, cranfield):
    hits = cranfield_store.query(cranfield.queries["1"], k=5)
    assert len(hits) == 5
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert all(
        hit.metadata["source"] == "cranfield" and hit.id.startswith(hit.metadata["source_id"] + "#") for hit in hits
    )


def test_score_is_cosine_similarity(cranfield_store, bi_encoder):
    hit = cranfield_store.query("boundary layer transition", k=1)[0]
    expected = float(bi_encoder.embed_query("boundary layer transition") @ bi_encoder.embed_documents([hit.text])[0])
    # in bfloat16 (auto's choice on some CPUs) a text's vector moves by ~1e-4 with the batch it is embedded in
    assert hit.score == pytest.approx(expected, abs=1e-4 if bi_encoder.dtype == "float32" else 2e-3)


def test_metadata_filter(cranfield_store):
    hits = cranfield_store.query("flow over a wing", k=10, where={"source_id": {"$in": ["3", "7"]}})
    assert hits and {hit.metadata["source_id"] for hit in hits} <= {"3", "7"}


def test_persists_across_clients(tmp_path, bi_encoder):
    ChromaStore("persist", path=tmp_path, bi_encoder=bi_encoder).ingest([Document("jet engine noise", id="a")])
    reopened = ChromaStore("persist", path=tmp_path, bi_encoder=bi_encoder)
    assert reopened.count() == 1
    hit = reopened.query("noise", k=1)[0]
    assert hit.id.startswith("a#0@") and hit.metadata["source_id"] == "a" and hit.text == "jet engine noise"


def test_reingest_replaces_instead_of_duplicating(empty_store):
    long_text = " ".join(f"sentence {i} about supersonic flow." for i in range(200))
    empty_store.chunking = ChunkSpec(size=64, overlap=8)
    first = empty_store.ingest([Document(long_text, id="doc"), Document("other", id="x")])
    assert first.chunks > 10 and first.documents == 2
    again = empty_store.ingest([Document(long_text, id="doc"), Document("other", id="x")])
    assert (again.documents, again.chunks, again.skipped) == (0, 0, ["doc", "x"])  # unchanged: not re-embedded
    assert empty_store.count() == first.chunks
    # the document shrinks: its stale chunks must go
    empty_store.ingest([Document("now a short text", id="doc")])
    assert empty_store.count() == 2
    hits = empty_store.query("text", k=10)
    assert sorted((hit.metadata["source_id"], hit.metadata["chunk_index"]) for hit in hits) == [("doc", 0), ("x", 0)]
    assert {hit.text for hit in hits} == {"now a short text", "other"}


def test_documents_without_id_get_a_stable_content_id(empty_store):
    empty_store.ingest([Document("same text")])
    empty_store.ingest([Document("same text")])
    assert empty_store.count() == 1


def test_empty_documents_are_reported_not_hidden(empty_store):
    report = empty_store.ingest([Document("  ", id="blank"), Document("real text", id="r")])
    assert report.empty == ["blank"] and report.documents == 1 and report.chunks == 1


def test_duplicate_ids_in_one_ingest_are_rejected(empty_store):
    with pytest.raises(ValueError, match="'d' appears more than once"):
        empty_store.ingest([Document("a", id="d"), Document("b", id="d")])


def test_bad_metadata_is_named(empty_store):
    with pytest.raises(TypeError, match="document 'm': metadata 'nested' is a dict"):
        empty_store.ingest([Document("text", id="m", metadata={"nested": {"a": 1}})])
    with pytest.raises(ValueError, match="reserved"):
        empty_store.ingest([Document("text", id="m", metadata={"chunk_index": 3})])


def test_bad_queries(empty_store):
    empty_store.ingest([Document("text", id="t")])
    with pytest.raises(ValueError, match="query is empty"):
        empty_store.query("  ")
    with pytest.raises(TypeError, match="query is a NoneType"):
        empty_store.retrieve(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        empty_store.query("text", k=0)


def test_one_document_where_a_list_belongs_is_refused_not_split(empty_store, bi_encoder):
    with pytest.raises(TypeError, match="documents must be a list, got one str"):
        empty_store.ingest("a whole document")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="documents must be a list, got one Document"):
        empty_store.ingest(Document("text", id="t"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="passages must be a list, got one str"):
        bi_encoder.embed_documents("a whole document")
    assert empty_store.count() == 0


def test_empty_collection_returns_nothing(empty_store):
    assert empty_store.query("anything") == []


def test_embedding_dimension_mismatch_is_refused(tmp_path, bi_encoder):
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path))
    client.create_collection(
        "other", embedding_function=None, metadata={"embedding_model": "big", "embedding_dimension": 768}
    )
    with pytest.raises(ValueError, match="768-dimensional"):
        ChromaStore("other", client=client, bi_encoder=bi_encoder)


def test_an_invalid_collection_name_is_a_clear_error(tmp_path, bi_encoder):
    for name in ("t", "-docs", "docs-", "../etc", "naïve", "a" * 600):
        with pytest.raises(ValueError, match="collection name .* is not valid"):
            ChromaStore(name, path=tmp_path, bi_encoder=bi_encoder)
    assert ChromaStore("my.docs_v2-1", path=tmp_path, bi_encoder=bi_encoder).count() == 0


@pytest.fixture(scope="module")
def float32_bi_encoder():
    """sentence-transformers itself in float32: the vectors every fast path is checked against."""
    from rag_rerank import BiEncoder

    return BiEncoder(backend="torch", dtype="float32", device="cpu")


def test_a_bfloat16_bi_encoder_embeds_close_to_float32(cranfield, float32_bi_encoder, tmp_path):
    import numpy as np

    from rag_rerank import BiEncoder

    bi_encoder = float32_bi_encoder
    fast = BiEncoder(dtype="bfloat16", device="cpu")
    assert (fast.backend, fast.dtype) == ("torch", "bfloat16")  # auto with a dtype means torch
    texts = [doc.text for doc in cranfield.corpus[:40]]
    full, half = bi_encoder.embed_documents(texts), fast.embed_documents(texts)
    assert half.dtype == np.float32 and np.min(np.sum(full * half, axis=1)) > 0.99
    store = ChromaStore("half", path=tmp_path, bi_encoder=fast)
    store.ingest(cranfield.corpus[:40])
    assert store.retrieve(cranfield.corpus[3].text[:200], 1, mode="dense")[0].id == cranfield.corpus[3].id
    with pytest.raises(ValueError, match="dtype must be"):
        BiEncoder(dtype="int4")


def _skip_without_fast_int8() -> None:
    """OpenVINO's int8 path is for CPUs with VNNI or AMX (the real rate, before any test stands in for it)."""
    from rag_rerank.inference.cpu import matmul_speedup

    if matmul_speedup("int8") < 1:
        pytest.skip("this CPU has no fast int8 (VNNI, AMX) to run OpenVINO's int8 on")


@pytest.mark.parametrize(("dtype", "min_cosine"), [("float32", 0.9999), ("bfloat16", 0.99), ("int8", 0.998)])
def test_an_openvino_bi_encoder_gives_the_torch_vectors(cranfield, float32_bi_encoder, tmp_path, dtype, min_cosine):
    import numpy as np

    from rag_rerank import BiEncoder

    bi_encoder = float32_bi_encoder
    pytest.importorskip("openvino")
    if dtype == "int8":
        _skip_without_fast_int8()
    fast = BiEncoder(backend="openvino", dtype=dtype)
    texts = [doc.text for doc in cranfield.corpus[:40]] + ["a short one", "wing " * 400]  # mixed lengths, truncation
    full, got = bi_encoder.embed_documents(texts), fast.embed_documents(texts)
    assert got.shape == full.shape and got.dtype == np.float32
    assert np.min(np.sum(full * got, axis=1)) > min_cosine  # same order as given, unit vectors
    query = "pressure distribution on a slender wing"
    assert float(bi_encoder.embed_query(query) @ fast.embed_query(query)) > min_cosine
    store = ChromaStore(f"openvino-{dtype}", path=tmp_path, bi_encoder=fast)
    store.ingest(cranfield.corpus[:40])
    assert store.retrieve(cranfield.corpus[3].text[:200], 1, mode="dense")[0].id == cranfield.corpus[3].id
    with pytest.raises(ValueError, match="backend must be"):
        BiEncoder(backend="onnx")


@pytest.mark.parametrize(
    "bfloat16,int8,installed,expected",
    [
        (3.3, 3.3, True, ("openvino", "bfloat16")),  # AVX-512 BF16 or AMX: OpenVINO's bf16
        (0.8, 3.0, True, ("openvino", "int8")),  # VNNI without BF16: OpenVINO's int8, if its vectors agree
        (0.02, 0.05, True, ("openvino", "float32")),  # AVX2-only: OpenVINO, the same vectors as torch
        (3.3, 3.3, False, ("torch", "bfloat16")),  # no OpenVINO: torch's bf16
        (0.8, 3.0, False, ("torch", "float32")),  # ... and no int8 path in torch for a bi-encoder
        (0.02, 0.05, False, ("torch", "float32")),
    ],
)
def test_auto_picks_the_bi_encoders_fastest_path_that_keeps_retrieval(monkeypatch, bfloat16, int8, installed, expected):
    import importlib.util

    from rag_rerank import BiEncoder
    from rag_rerank.inference import cpu

    if installed:
        pytest.importorskip("openvino")
    if expected[1] == "int8":
        _skip_without_fast_int8()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: {"bfloat16": bfloat16, "int8": int8}.get(kind, 1.0))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "openvino" and not installed else real_find_spec(name)
    )
    if expected == ("openvino", "bfloat16") and not openvino_has_bfloat16():
        expected = ("openvino", "float32")  # OpenVINO runs float32 where it has no bfloat16 kernels, and says so
    bi_encoder = BiEncoder(device="cpu")  # backend="auto" is the default
    assert (bi_encoder.backend, bi_encoder.dtype) == expected
    assert bi_encoder.embed_query("wing").shape == (bi_encoder.dimension,)  # and it runs
    assert (BiEncoder(device="cpu", dtype="float32").backend, BiEncoder(backend="torch").dtype) == ("torch", "float32")


def test_a_precision_this_cpu_runs_slowly_is_flagged_when_asked_for(monkeypatch, recwarn):
    from rag_rerank import BiEncoder
    from rag_rerank.inference import cpu

    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: 0.05)  # an AVX2-only CPU's bfloat16 and int8
    with pytest.warns(RuntimeWarning, match="bfloat16 matrices at 0.05x .* slower than float32 here"):
        BiEncoder(backend="torch", dtype="bfloat16")
    recwarn.clear()
    assert BiEncoder().dtype == "float32" and not [w for w in recwarn if w.category is RuntimeWarning]  # auto's own


def test_auto_runs_float32_where_a_models_int8_vectors_differ(monkeypatch, caplog):
    """int8 is kept only if it embeds built-in texts as float32 does (mean cosine >= 0.998, measured
    once per model and cached): a verdict below that (a model with outlier channels) gives float32."""
    import json

    pytest.importorskip("openvino")
    from rag_rerank import BiEncoder
    from rag_rerank.inference import cpu

    _skip_without_fast_int8()
    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: {"bfloat16": 0.8, "int8": 3.0}.get(kind, 1.0))
    first = BiEncoder(device="cpu")
    assert (first.backend, first.dtype) == ("openvino", "int8")
    from rag_rerank.inference.calibration import verdict_path

    verdict = verdict_path(first._model[0].auto_model, "bi-encoder-openvino-int8")  # this CPU's, this model's
    saved = verdict.read_text()
    assert json.loads(saved)["cosine"] > 0.999  # all-MiniLM-L6-v2: 0.9997
    verdict.write_text(json.dumps({**json.loads(saved), "cosine": 0.9}))
    try:
        with caplog.at_level("WARNING", logger="rag_rerank"):
            second = BiEncoder(device="cpu")
        assert (second.backend, second.dtype) == ("openvino", "float32")
        assert "differ from float32" in caplog.text
        assert second.embed_query("wing") @ first.embed_query("wing") > 0.998
    finally:
        verdict.write_text(saved)


def test_auto_checks_bfloat16_vectors_against_float32_once_per_cpu(monkeypatch, caplog):
    """bfloat16 is lossy too (and kernels a CPU runs wrongly give NaN): auto keeps it only where its
    vectors of the built-in texts agree with float32's, a verdict kept per CPU and model."""
    import json

    pytest.importorskip("openvino")
    from rag_rerank import BiEncoder
    from rag_rerank.inference import cpu
    from rag_rerank.inference.calibration import verdict_path

    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: 3.3)
    first = BiEncoder(device="cpu")
    if first.dtype != "bfloat16":
        pytest.skip("this CPU has no bfloat16 kernels (AVX-512 BF16 or AMX): OpenVINO runs float32")
    verdict = verdict_path(first._model[0].auto_model, "bi-encoder-openvino-bfloat16")
    saved = verdict.read_text()
    assert json.loads(saved)["cosine"] > 0.999
    verdict.write_text(json.dumps({**json.loads(saved), "cosine": float("nan")}))  # as NaN vectors leave it
    try:
        with caplog.at_level("WARNING", logger="rag_rerank"):
            second = BiEncoder(device="cpu")
        assert (second.backend, second.dtype) == ("openvino", "float32")
        assert "differ from float32 or are not finite" in caplog.text
    finally:
        verdict.write_text(saved)


def test_auto_runs_a_model_openvino_cannot_in_torch(tmp_path, monkeypatch):
    """A bi-encoder whose layout the OpenVINO path does not run (here: max pooling) falls back to torch
    under auto, and is refused with the reason when OpenVINO is asked for by name."""
    pytest.importorskip("openvino")
    from sentence_transformers import SentenceTransformer, models

    from rag_rerank import BiEncoder
    from rag_rerank.inference import cpu
    from rag_rerank.models import DEFAULT_BI_ENCODER, resolve_model

    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: 3.3)
    transformer = models.Transformer(resolve_model(DEFAULT_BI_ENCODER))
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="max")
    SentenceTransformer(modules=[transformer, pooling]).save(str(tmp_path / "max-pooling"))
    fallback = BiEncoder(str(tmp_path / "max-pooling"), device="cpu")
    assert (fallback.backend, fallback.dtype) == ("torch", "float32")
    assert fallback.embed_documents(["a wing", "a flap"]).shape == (2, fallback.dimension)
    with pytest.raises(ValueError, match="max' pooling: use backend='torch'"):
        BiEncoder(str(tmp_path / "max-pooling"), device="cpu", backend="openvino")
