"""Batch reranking of files, and the Ray paths, for real: a local Ray (2 CPUs), a real `chroma run`,
real Cranfield documents and real (small) cross-encoders. The Ray results must equal the in-process ones."""

from __future__ import annotations

import functools
import json

import httpx
import pytest
from server_helpers import ChromaServer, free_port

from rag_rerank import ChromaStore, CrossEncoderReranker, Document
from rag_rerank.cli import main
from rag_rerank.scale import RayReranker, ingest_on_ray, rerank_file

pytest.importorskip("ray", reason="the Ray paths need rag-rerank[ray]")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def rows(cranfield):
    """Eight queries, each with 12 candidates (plain texts, and objects with a text), ids that look numeric."""
    queries = list(cranfield.queries.items())[:8]
    docs = cranfield.corpus
    out = []
    for n, (query_id, query) in enumerate(queries):
        texts = [doc.text for doc in docs[n * 12 : n * 12 + 12]]
        candidates = texts[:6] + [{"text": text, "id": f"d{n}-{i}"} for i, text in enumerate(texts[6:])]
        out.append({"query_id": f"00{query_id}", "query": query, "candidates": candidates, "tag": n})
    return out


@pytest.fixture(scope="module")
def make_reranker(tiny_cross_encoder_path):
    return functools.partial(CrossEncoderReranker, tiny_cross_encoder_path, backend="torch", device="cpu")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts_of(row):
    return [c if isinstance(c, str) else c["text"] for c in row["candidates"]]


# --- in-process -----------------------------------------------------------------------------


def test_rerank_file_adds_scores_in_input_order_and_keeps_every_field(tmp_path, rows, make_reranker):
    reranker = make_reranker()
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert rerank_file(source, tmp_path / "out.jsonl", reranker, batch_rows=3, show_progress=False) == len(rows)
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["query_id"] for row in out] == [row["query_id"] for row in rows]  # "001" stays a string
    for given, got in zip(rows, out):
        assert {k: got[k] for k in given} == given  # every input field passes through unchanged
        assert got["scores"] == pytest.approx(reranker.score(given["query"], texts_of(given)), abs=1e-5)
        assert got["score_kind"] == "logit"
        cut = reranker.truncated([(given["query"], text) for text in texts_of(given)])
        assert got["truncated"] == [i for i, c in enumerate(cut) if c]  # the tiny model reads 128 tokens
        assert got["truncated_by"] == ["cross-encoder"] * sum(cut)


def test_rerank_file_reads_and_writes_parquet(tmp_path, rows, make_reranker):
    import pyarrow as pa

    plain = [{**row, "candidates": texts_of(row)} for row in rows]  # one Arrow type per column
    pq.write_table(pa.Table.from_pylist(plain), tmp_path / "in.parquet")
    rerank_file(tmp_path / "in.parquet", tmp_path / "out.parquet", make_reranker(), batch_rows=5, show_progress=False)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("scores").type == pa.list_(pa.float64())
    assert out.schema.field("truncated").type == pa.list_(pa.int64())  # typed even when every list is empty
    assert out.column("query_id").to_pylist() == [row["query_id"] for row in rows]
    assert [len(s) for s in out.column("scores").to_pylist()] == [len(row["candidates"]) for row in rows]


def test_rerank_file_marks_the_candidates_the_model_read_in_part(tmp_path, make_reranker):
    reranker = make_reranker()
    long_text = "flutter of wing panels " * 400
    source = write_jsonl(tmp_path / "in.jsonl", [{"query": "flutter", "candidates": ["short text", long_text]}])
    rerank_file(source, tmp_path / "out.jsonl", reranker, show_progress=False)
    (row,) = read_jsonl(tmp_path / "out.jsonl")
    assert row["truncated"] == [1] and row["truncated_by"] == ["cross-encoder"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "", "candidates": ["a"]}', r"in\.jsonl:2: 'query' must be a non-empty string"),
        ('{"query": "q", "candidates": "a text"}', r"in\.jsonl:2: 'candidates' must be a list"),
        ('{"query": "q", "candidates": ["a", {"id": 3}]}', r"in\.jsonl:2: candidate 1 has no text"),
        ("[1, 2]", r"in\.jsonl:2: each line must be a JSON object"),
        ("{not json", r"in\.jsonl:2: not JSON"),
    ],
)
def test_rerank_file_names_the_bad_line(tmp_path, make_reranker, line, message):
    source = tmp_path / "in.jsonl"
    source.write_text('{"query": "q", "candidates": ["a"]}\n' + line + "\n")
    with pytest.raises((ValueError, TypeError), match=message):
        rerank_file(source, tmp_path / "out.jsonl", make_reranker(), show_progress=False)


def test_rerank_file_refuses_to_overwrite_its_input_or_guess_a_format(tmp_path, rows, make_reranker):
    source = write_jsonl(tmp_path / "in.jsonl", rows[:1])
    with pytest.raises(ValueError, match="overwrite the input"):
        rerank_file(source, source, make_reranker(), show_progress=False)
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        rerank_file(source, tmp_path / "out.csv", make_reranker(), show_progress=False)
    assert read_jsonl(source) == rows[:1]


# --- Ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    from rag_rerank.scale import start_ray

    ray = start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_rerank_file_equals_the_in_process_result(tmp_path, rows, make_reranker, ray_session):
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    rerank_file(source, tmp_path / "here.jsonl", make_reranker(), show_progress=False)
    on_ray = RayReranker(make_reranker, actors=2, rows_per_task=2)
    assert rerank_file(source, tmp_path / "ray.jsonl", on_ray, show_progress=False) == len(rows)
    here, there = read_jsonl(tmp_path / "here.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert [row["query_id"] for row in there] == [row["query_id"] for row in rows]  # order and types kept
    for a, b in zip(here, there):
        assert {k: b[k] for k in rows[0]} == {k: a[k] for k in rows[0]}
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-4)


def test_ray_rerank_many_returns_every_candidate_ranked(cranfield, make_reranker, ray_session):
    reranker = make_reranker()
    requests = [(query, cranfield.corpus[i * 10 : i * 10 + 10]) for i, query in enumerate(["flutter", "heat transfer"])]
    done = RayReranker(make_reranker, actors=1).rerank_many(requests)
    for (query, docs), (ranked, ms) in zip(requests, done):
        expected = reranker.rerank(query, docs)
        assert [d.id for d in ranked] == [d.id for d in expected]
        assert [d.score for d in ranked] == pytest.approx([d.score for d in expected], abs=1e-4)
        assert ms > 0


def test_ray_eval_scores_the_same_as_in_process(cranfield, cranfield_store, make_reranker, ray_session):
    from rag_rerank.evaluation.harness import evaluate

    judged = [q for q in cranfield.qrels if any(d in cranfield.qrels[q] for d in map(str, range(1, 61)))][:6]
    data = cranfield.subset(judged)
    here = evaluate(data, cranfield_store, {"ce": make_reranker()}, depth=20, first_stages=(), show_progress=False)
    there = evaluate(
        data, cranfield_store, {"ce": RayReranker(make_reranker)}, depth=20, first_stages=(), show_progress=False
    )
    assert here.results[0].run == there.results[0].run
    assert there.results[0].metrics == pytest.approx(here.results[0].metrics)


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-ray"))
    yield server
    server.stop()


def test_ray_ingest_writes_what_an_in_process_ingest_writes_and_resumes(chroma, cranfield, bi_encoder, ray_session):
    docs = cranfield.corpus[:40]
    here = ChromaStore("here", host="localhost", port=chroma.port, bi_encoder=bi_encoder)
    there = ChromaStore("there", host="localhost", port=chroma.port, bi_encoder=bi_encoder)
    expected = here.ingest(docs, show_progress=False)
    report = ingest_on_ray(docs, there, actors=2, batch_size=8)
    assert (report.documents, report.chunks) == (expected.documents, expected.chunks)
    assert sorted(there._collection.get()["ids"]) == sorted(here._collection.get()["ids"])
    hit = there.retrieve(cranfield.queries["1"], k=3, mode="hybrid")
    assert [d.id for d in hit] == [d.id for d in here.retrieve(cranfield.queries["1"], k=3, mode="hybrid")]

    changed = Document(docs[3].text + " Revised.", id=docs[3].id, metadata=docs[3].metadata)
    second = [*docs[:3], changed, *docs[4:], *cranfield.corpus[40:44]]
    again = ingest_on_ray(second, there, actors=2, batch_size=8)
    assert sorted(again.skipped) == sorted(d.id for d in docs if d.id != docs[3].id)  # a re-run resumes
    assert again.documents == 5  # the changed source and the four new ones
    here.ingest(second, show_progress=False)
    assert sorted(there._collection.get()["ids"]) == sorted(here._collection.get()["ids"])  # old version gone


def test_ray_actors_make_their_own_auto_choice_of_bi_encoder_path(chroma, bi_encoder):
    from rag_rerank import BiEncoder
    from rag_rerank.scale.ray_ingest import StoreRecipe

    auto = StoreRecipe.of(ChromaStore("auto", host="localhost", port=chroma.port, bi_encoder=bi_encoder))
    assert (auto.backend, auto.dtype) == ("auto", None)  # not this machine's resolution of it
    opened = auto.open().bi_encoder  # on this machine, the same choice
    assert (opened.backend, opened.dtype) == (bi_encoder.backend, bi_encoder.dtype)
    asked = BiEncoder(backend="torch", dtype="bfloat16")
    pinned = StoreRecipe.of(ChromaStore("pinned", host="localhost", port=chroma.port, bi_encoder=asked))
    assert (pinned.backend, pinned.dtype) == ("torch", "bfloat16")


def test_ray_ingest_needs_a_chroma_server(empty_store, cranfield):
    with pytest.raises(ValueError, match="Chroma server"):
        ingest_on_ray(cranfield.corpus[:2], empty_store)


def test_the_cli_runs_ingest_and_rerank_batch_on_ray(tmp_path, chroma, rows, tiny_cross_encoder_path, ray_session):
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(
        corpus, [{"id": f"doc-{i}", "text": row["query"] + " " + texts_of(row)[0]} for i, row in enumerate(rows)]
    )
    server = ["--chroma-host", "localhost", "--chroma-port", str(chroma.port), "--collection", "cli-ray"]
    assert main(["ingest", str(corpus), *server, "--ray", "--actors", "2"]) == 0
    stored = ChromaStore("cli-ray", host="localhost", port=chroma.port)._collection.get(include=["metadatas"])
    assert {meta["source_id"] for meta in stored["metadatas"]} == {f"doc-{i}" for i in range(len(rows))}
    assert main(["ingest", str(corpus), *server, "--ray"]) == 0  # a re-run: everything skipped

    source = write_jsonl(tmp_path / "in.jsonl", rows)
    model = ["--cross-encoder", tiny_cross_encoder_path, "--backend", "torch"]
    assert main(["rerank-batch", str(source), str(tmp_path / "out.jsonl"), *model, "--ray", "--actors", "1"]) == 0
    assert [row["query_id"] for row in read_jsonl(tmp_path / "out.jsonl")] == [row["query_id"] for row in rows]


def test_ray_serve_answers_the_rerank_shapes_with_the_core_scores(make_reranker, ray_session):
    from ray import serve

    from rag_rerank.scale import ray_serve

    port = free_port()
    ray_serve.run(make_reranker, port=port, replicas=1, blocking=False)
    try:
        url = f"http://127.0.0.1:{port}"
        query, texts = "supersonic flutter", ["flutter of panels", "heat transfer", "buckling of shells"]
        expected = make_reranker().score(query, texts)
        cohere = httpx.post(f"{url}/v1/rerank", json={"query": query, "documents": texts}, timeout=60).json()
        got = {r["index"]: r["relevance_score"] for r in cohere["results"]}
        assert [r["index"] for r in cohere["results"]] == sorted(range(3), key=lambda i: -expected[i])
        tei = httpx.post(f"{url}/rerank", json={"query": query, "texts": texts, "raw_scores": True}, timeout=60).json()
        assert {r["index"]: r["score"] for r in tei} == pytest.approx(dict(enumerate(expected)), abs=1e-4)
        assert len(got) == 3 and cohere["meta"]["api_version"] == {"version": "1"}
        long_text = "flutter of wing panels " * 400  # longer than the tiny model reads: said, not hidden
        cut = httpx.post(f"{url}/v2/rerank", json={"query": query, "documents": [long_text, texts[0]]}, timeout=60)
        assert cut.headers["X-Truncated-Documents"] == "1" and "cut to fit" in cut.json()["meta"]["warnings"][0]
        bad = httpx.post(f"{url}/v1/rerank", json={"query": " ", "documents": texts}, timeout=60)
        assert bad.status_code == 400 and "query is empty" in bad.text
    finally:
        serve.shutdown()


def test_serve_on_ray_builds_replicas_with_the_commands_model_options(monkeypatch, tiny_cross_encoder_path):
    from rag_rerank.scale import ray_serve

    started = {}
    monkeypatch.setattr(ray_serve, "run", lambda make, **options: started.update(make=make, **options))
    argv = ["serve", "--ray", "--replicas", "3", "--cross-encoder", tiny_cross_encoder_path, "--backend", "torch"]
    assert main([*argv, "--dtype", "bfloat16", "--cache-size", "64", "--port", "9123"]) == 0
    assert (started["replicas"], started["port"], started["address"]) == (3, 9123, None)
    reranker = started["make"]()  # what each replica builds
    assert (reranker.backend, reranker.dtype, reranker.cache_size) == ("torch", "bfloat16", 64)
