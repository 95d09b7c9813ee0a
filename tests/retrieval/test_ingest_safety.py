"""Re-ingest never loses a document: the new version is written whole before the old one goes,
unchanged documents are skipped, and a process killed mid-ingest leaves every document whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest
from store_helpers import versions_by_source, whole_text

from rag_rerank import ChromaStore, ChunkSpec, Document

SPEC = ChunkSpec(size=64, overlap=8)


def test_a_failed_reingest_keeps_the_old_version(tmp_path, bi_encoder, monkeypatch):
    store = ChromaStore("safe", path=tmp_path, bi_encoder=bi_encoder, chunking=SPEC)
    old = [Document(f"the old text of document {i} about wing flutter " * 20, id=str(i)) for i in range(5)]
    store.ingest(old)
    before = versions_by_source(store)

    def out_of_memory(texts):
        raise MemoryError("simulated: the machine ran out of memory while embedding")

    monkeypatch.setattr(store.bi_encoder, "embed_documents", out_of_memory)
    with pytest.raises(MemoryError):
        store.ingest([Document(f"a new text for {i}", id=str(i)) for i in range(5)])
    assert versions_by_source(store) == before  # nothing deleted, nothing half-written
    assert {doc.id for doc in store.retrieve("wing flutter", 5)} == {str(i) for i in range(5)}


def test_unchanged_documents_are_skipped_and_only_changes_reembedded(tmp_path, bi_encoder, monkeypatch):
    store = ChromaStore("skip", path=tmp_path, bi_encoder=bi_encoder, chunking=SPEC)
    docs = [Document(f"document {i} on boundary layers", id=str(i), metadata={"year": 1960}) for i in range(40)]
    assert store.ingest(docs).documents == 40
    embedded: list[str] = []
    embed = store.bi_encoder.embed_documents
    monkeypatch.setattr(store.bi_encoder, "embed_documents", lambda texts: embedded.extend(texts) or embed(texts))
    docs[3] = Document("document 3, edited", id="3", metadata={"year": 1960})
    docs[7] = Document(docs[7].text, id="7", metadata={"year": 1961})  # metadata changes count too
    report = store.ingest(docs)
    assert (report.documents, sorted(report.skipped)) == (2, sorted(str(i) for i in range(40) if i not in (3, 7)))
    assert embedded == ["document 3, edited", docs[7].text]
    assert store.count() == 40
    hit = store.retrieve("edited", 1, mode="lexical")[0]
    assert (hit.id, hit.text) == ("3", "document 3, edited")
    assert store.retrieve("document 7", 40, mode="lexical", where={"year": 1961})[0].id == "7"


CHILD = textwrap.dedent(
    """
    import sys
    from rag_rerank import ChromaStore, ChunkSpec, Document
    from rag_rerank.data import load_cranfield

    store = ChromaStore("crash", path=sys.argv[1], chunking=ChunkSpec(size=64, overlap=8))
    corpus = load_cranfield(sys.argv[2]).corpus[: int(sys.argv[3])]
    new = [Document("Revised. " + d.text + " " + d.text[:200], id=d.id, metadata=d.metadata) for d in corpus]
    for start in range(0, len(new), 8):
        store.ingest(new[start : start + 8], batch_size=8)
        print("batch", start, flush=True)
    """
)


def test_a_killed_ingest_leaves_every_document_whole_and_a_rerun_finishes(tmp_path, bi_encoder, cranfield):
    n = 120
    corpus = cranfield.corpus[:n]
    store = ChromaStore("crash", path=tmp_path, bi_encoder=bi_encoder, chunking=SPEC)
    store.ingest(corpus)
    new_texts = {d.id: "Revised. " + d.text + " " + d.text[:200] for d in corpus}

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), os.environ["RAG_RERANK_CRANFIELD"], str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(4):  # let it write a few batches, then kill it in the middle of the next ones
        assert child.stdout.readline().startswith("batch"), "the child ingest failed to start"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    reopened = ChromaStore("crash", path=tmp_path, bi_encoder=bi_encoder, chunking=SPEC)
    found = versions_by_source(reopened)
    assert set(found) == {d.id for d in corpus}, "a document was lost"
    old_texts = {d.id: d.text for d in corpus}
    states = defaultdict(int)
    for source, versions in found.items():
        texts = [whole_text(chunks) for chunks in versions.values()]
        assert None not in texts, f"document {source} is half-written: {versions.keys()}"
        assert set(texts) <= {old_texts[source], new_texts[source]}
        states[tuple(sorted("new" if t == new_texts[source] else "old" for t in texts))] += 1
    assert states[("new",)] >= 32 and states[("old",)] > 0, f"the kill did not land mid-ingest: {dict(states)}"
    print(f"SIGKILL mid-ingest, {n} documents: {dict(states)}; lost 0, half-written 0")

    report = reopened.ingest([Document(new_texts[d.id], id=d.id, metadata=d.metadata) for d in corpus])
    assert report.documents + len(report.skipped) == n
    for source, versions in versions_by_source(reopened).items():
        assert [whole_text(chunks) for chunks in versions.values()] == [new_texts[source]]
    hit = reopened.retrieve("revised", 1, mode="lexical")[0]
    assert hit.text.startswith("Revised.")
