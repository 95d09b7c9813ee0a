"""The Chroma-backed first stage: ingest documents as embedded chunks, query them back.

Chunks get ids ``"<source_id>#<chunk_index>@<version>"``, the version a hash of what the
source's chunks are made from (text, metadata, chunking, bi-encoder). Re-ingesting a source
writes the new version whole before it deletes the old one, so a failure or a kill in between
leaves each document whole in its old or new version (never half-written; the next ingest
finishes the job), and an unchanged source is skipped without re-embedding it. Each chunk
fits the bi-encoder's own token limit, so none is truncated when embedded. Embeddings
always come from our bi-encoder (Chroma's default embedding function is never used: it
downloads a model). The collection uses cosine distance on normalised vectors, and
``query`` returns ``score = 1 - distance``, the cosine similarity (-1..1).

``retrieve`` is the first stage users want: whole documents (each source once, at its best
chunk), found by the bi-encoder, by BM25 (``rag_rerank.retrieval.lexical``) or by both fused
(``rag_rerank.retrieval.fusion``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal, get_args

from rag_rerank.document import TRUNCATED_BY, Document, check_text, check_unicode, ids_of, refuse_single
from rag_rerank.retrieval import fusion
from rag_rerank.retrieval.chroma_client import make_client
from rag_rerank.retrieval.chunking import ChunkSpec, chunk_spans, make_chunk_id, source_of
from rag_rerank.retrieval.embedding import BiEncoder
from rag_rerank.retrieval.lexical import VERSION_KEY, LexicalIndex, StoredChunks

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "rag_rerank"
DEFAULT_PATH = ".chroma"
RESERVED_METADATA = ("source_id", "chunk_index", "chunk_count", "char_start", "char_end", "version", TRUNCATED_BY)
Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = get_args(Mode)
Fusion = Literal["rrf", "weighted"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
# Candidates each side contributes to the fusion: deep enough that a document one side
# ranks 80th can still be lifted by the other.
FUSION_DEPTH = 100
_METADATA_TYPES = (str, int, float, bool)


@dataclass
class IngestReport:
    """What an ingest did: sources and chunks written, the ids of sources skipped because
    they were stored already in the same version, and of sources with no text (not stored)."""

    documents: int = 0
    chunks: int = 0
    skipped: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    truncated: int = 0  # chunks the bi-encoder read only in part (only with ChunkSpec(fit_bi_encoder=False))


class ChromaStore:
    """A Chroma collection of embedded chunks: the first stage.

    Args:
        collection: The Chroma collection's name (made if it does not exist).
        path: The folder of the embedded Chroma (``PersistentClient``), the default.
        host, port: A Chroma server's address, instead of the embedded Chroma.
        client: A ready Chroma client, instead of either.
        bi_encoder: A ``BiEncoder`` or a model name (default all-MiniLM-L6-v2). A collection keeps
            the model it was filled with; opening it with another is refused.
        chunking: How documents are cut (``ChunkSpec``: tiktoken tokens, fitted to the bi-encoder).

    Raises:
        ValueError: an invalid collection name, or a bi-encoder other than the collection's.
        StoreUnavailable: the Chroma server cannot be reached (after retries).
    """

    def __init__(
        self,
        collection: str = DEFAULT_COLLECTION,
        *,
        path: str | Path = DEFAULT_PATH,
        host: str | None = None,
        port: int = 8000,
        client: Any | None = None,
        bi_encoder: BiEncoder | str | None = None,
        chunking: ChunkSpec = ChunkSpec(),
    ):
        _check_collection_name(collection)
        self.bi_encoder = bi_encoder if isinstance(bi_encoder, BiEncoder) else BiEncoder(bi_encoder or _default())
        self.chunking = chunking
        self.client = client or make_client(path, host, port)
        self.path = Path(path) if client is None and not host else None  # the embedded store's folder
        self.host: str | None = host if client is None and host else None  # the Chroma server's address
        self.port: int | None = port if self.host else None
        self.collection_name = collection
        self._collection = self.client.get_or_create_collection(
            collection,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedding_model": self.bi_encoder.model_name, "embedding_dimension": self.bi_encoder.dimension},
        )
        self._check_embedding_model()
        lexical_folder = self.path / "lexical" / collection if self.path is not None else None
        self._lexical = LexicalIndex(lexical_folder)

    def _check_embedding_model(self) -> None:
        meta = self._collection.metadata or {}
        dim = meta.get("embedding_dimension")
        if dim is not None and int(dim) != self.bi_encoder.dimension:
            raise ValueError(
                f"collection {self.collection_name!r} holds {dim}-dimensional embeddings from "
                f"{meta.get('embedding_model')!r}, but the bi-encoder {self.bi_encoder.model_name!r} makes "
                f"{self.bi_encoder.dimension}-dimensional ones. Use the same model, or another collection."
            )
        if meta.get("embedding_model") not in (None, self.bi_encoder.model_name):
            warnings.warn(
                f"collection {self.collection_name!r} was built with {meta['embedding_model']!r}, "
                f"queried with {self.bi_encoder.model_name!r}: scores are only meaningful for the same model.",
                stacklevel=3,
            )

    def count(self) -> int:
        """Number of chunks in the collection."""
        return self._collection.count()

    def ingest(
        self, documents: Iterable[Document], *, batch_size: int = 128, show_progress: bool | None = None
    ) -> IngestReport:
        """Chunk, embed and write ``documents``.

        A document without an ``id`` gets one from a hash of its text, so ingesting the
        same text twice stays idempotent. A source already stored in the same version (same
        text, metadata, chunking and bi-encoder) is skipped; a changed one is replaced safely
        (see the module's docstring); one with no text is removed.

        Args:
            documents: The documents (``Document``); their text is checked first, all of them
                before anything is written.
            batch_size: Documents per write.
            show_progress: A progress bar (default: for more than a few documents).

        Returns:
            What was written, skipped and left out (``IngestReport``).

        Raises:
            ValueError: duplicate ids, or a text that is not valid Unicode, named.
        """
        from tqdm.auto import tqdm

        refuse_single(documents, "documents")
        docs = list(documents)
        total = len(docs)
        check_unique_ids(docs)
        for i, doc in enumerate(docs):  # all of them before anything is written
            if isinstance(doc.text, str):
                check_unicode(doc.text, f"document {i}" + (f" ({doc.id!r})" if doc.id is not None else ""))
        report = IngestReport()
        progress = tqdm(total=total, desc="Ingesting", unit="doc", disable=_quiet(show_progress, total))
        try:
            for batch in _batches(docs, batch_size):
                self._ingest_batch(batch, report)
                progress.update(len(batch))
        finally:
            progress.close()
            if report.documents or report.empty:
                self._stamp()
        if report.skipped:
            log.info("%d document(s) unchanged since the last ingest, skipped", len(report.skipped))
        if report.truncated:
            log.warning(
                "%d chunk(s) are longer than the bi-encoder reads (%d tokens) and were embedded in part; "
                "ChunkSpec(fit_bi_encoder=True) avoids it (marked in their metadata: truncated_by)",
                report.truncated,
                self.bi_encoder.max_tokens,
            )
        if report.empty:
            log.warning("%d document(s) had no text and were not stored: %s", len(report.empty), report.empty[:10])
        return report

    def _ingest_batch(self, batch: Sequence[Document], report: IngestReport) -> None:
        sources = [_source_id(doc) for doc in batch]
        stored = self._collection.get(where={"source_id": {"$in": sources}}, include=["metadatas"])
        stored_versions: dict[str, dict[str, str | None]] = {}  # source -> chunk id -> version
        for chunk_id, meta in zip(stored["ids"], stored["metadatas"]):
            meta = meta or {}
            stored_versions.setdefault(str(meta.get("source_id")), {})[chunk_id] = meta.get("version")
        new: list[tuple[list[str], list[str], list[dict[str, Any]]]] = []  # per source: ids, texts, metadatas
        stale: list[str] = []
        for doc, source_id in zip(batch, sources):
            old = stored_versions.get(source_id, {})
            version = self._version_of(doc)
            if old and set(old.values()) == {version}:
                report.skipped.append(source_id)
                continue
            stale += [chunk_id for chunk_id, v in old.items() if v != version]
            if version in old.values():  # written by an ingest that stopped before its clean-up
                report.documents += 1
                continue
            chunks = self._chunks_of(doc, source_id, version)
            report.truncated += sum(TRUNCATED_BY in meta for meta in chunks[2])
            if chunks[0]:
                new.append(chunks)
                report.documents += 1
            else:
                report.empty.append(source_id)
        if new or stale:
            self._stamp()
        self._write(new)
        report.chunks += sum(len(ids) for ids, _, _ in new)
        if stale:  # only once every new version is whole
            self._collection.delete(ids=stale)

    def _version_of(self, doc: Document) -> str:
        """What a source's chunks are made from, hashed: a change in any part re-embeds it."""
        recipe = json.dumps(
            [doc.text, doc.metadata, repr(self.chunking), self.bi_encoder.model_name], sort_keys=True, default=str
        )
        return hashlib.sha256(recipe.encode("utf-8")).hexdigest()[:12]

    def _chunks_of(
        self, doc: Document, source_id: str, version: str
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        fits = self.bi_encoder.fits if self.chunking.fit_bi_encoder else None
        spans = chunk_spans(doc.text, self.chunking, fits=fits)
        base = _clean_metadata(doc.metadata, source_id)
        ids = [make_chunk_id(source_id, index, version) for index in range(len(spans))]
        texts = [doc.text[begin:end] for begin, end in spans]
        metadatas: list[dict[str, Any]] = [
            {
                **base,
                "source_id": source_id,
                "chunk_index": index,
                "chunk_count": len(spans),
                "char_start": begin,
                "char_end": end,
                "version": version,
            }
            for index, (begin, end) in enumerate(spans)
        ]
        if not self.chunking.fit_bi_encoder:  # chunks may be longer than the bi-encoder reads: say which
            for text, meta in zip(texts, metadatas):
                if not self.bi_encoder.fits(text):
                    meta[TRUNCATED_BY] = ["bi-encoder"]
        return ids, texts, metadatas

    def _write(self, sources: list[tuple[list[str], list[str], list[dict[str, Any]]]]) -> None:
        """Embed, then upsert, never splitting one source's chunks across two Chroma calls (each
        call is one transaction), so each source's new version lands whole or not at all."""
        texts = [text for _, source_texts, _ in sources for text in source_texts]
        if not texts:
            return
        embeddings = iter(self.bi_encoder.embed_documents(texts))
        limit = self.client.get_max_batch_size()
        call: tuple[list, list, list, list] = ([], [], [], [])
        for ids, source_texts, metadatas in sources:
            if call[0] and len(call[0]) + len(ids) > limit:
                self._upsert(*call)
                call = ([], [], [], [])
            call[0].extend(ids)
            call[1].extend(next(embeddings) for _ in ids)
            call[2].extend(source_texts)
            call[3].extend(metadatas)
            while len(call[0]) > limit:  # one source with more chunks than Chroma takes at once
                self._upsert(*(part[:limit] for part in call))
                call = tuple(part[limit:] for part in call)  # type: ignore[assignment]
        self._upsert(*call)

    def _upsert(self, ids: list, embeddings: list, texts: list, metadatas: list) -> None:
        if ids:
            self._collection.upsert(ids=ids, embeddings=embeddings, documents=texts, metadatas=metadatas)

    def delete(self, source_ids: Sequence[str]) -> None:
        """Remove every chunk of the given sources."""
        if source_ids:
            self._stamp()
            self._collection.delete(where={"source_id": {"$in": list(source_ids)}})
            self._stamp()

    def _stamp(self) -> None:
        """Mark the collection changed, so every lexical index over it (in any process) rebuilds."""
        metadata = dict(self.client.get_collection(self.collection_name).metadata or {})
        self._collection.modify(metadata={**metadata, VERSION_KEY: uuid.uuid4().hex})

    def query(self, query: str, k: int = 10, where: dict[str, Any] | None = None) -> list[Document]:
        """The bi-encoder's search over chunks.

        Args:
            query: The question or search text.
            k: How many chunks.
            where: A Chroma metadata filter, e.g. ``{"year": {"$gte": 2020}}``.

        Returns:
            The ``k`` chunks closest to ``query``, best first, ``score`` their cosine similarity.
        """
        _check_k(k)
        check_text(query, "query", "there is nothing to search for")
        if self.count() == 0:
            return []
        vector = self.bi_encoder.embed_query(query)
        result = self._collection.query(
            query_embeddings=[vector],
            n_results=k,
            where=where or None,
            include=["documents", "metadatas", "distances"],
        )
        return [
            Document(
                text=text, metadata=dict(meta or {}), id=chunk_id, score=1.0 - float(distance), score_kind="cosine"
            )
            for chunk_id, text, meta, distance in zip(
                result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
            )
        ]

    def retrieve(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        where: dict[str, Any] | None = None,
        fusion_method: Fusion = "weighted",
        dense_weight: float = 0.5,
        chunks: bool = False,
    ) -> list[Document]:
        """The ``k`` best documents for ``query``, best first, each source document once.

        A document stands for its best chunk: ``id`` is the source id, ``text`` that chunk (the one
        a reranker should read; the dense side's when both found the document), and ``metadata``
        the chunk's own plus ``chunk_id``, ``char_start`` / ``char_end`` (its span in the source),
        ``dense_score`` and ``lexical_score`` (None where that side did not find it).

        Args:
            query: The question or search text.
            k: How many documents.
            mode: ``"hybrid"`` (default) fuses BM25 and the bi-encoder; ``"dense"`` is the
                bi-encoder alone (score: cosine similarity); ``"lexical"`` BM25 alone (score: BM25
                of the whole document, rebuilt from its chunks).
            where: A Chroma metadata filter, e.g. ``{"year": {"$gte": 2020}}``.
            fusion_method: ``"weighted"`` (default; ``dense_weight * dense + (1 - dense_weight) *
                BM25``, each min-max scaled over its top 100) or ``"rrf"`` (reciprocal rank fusion).
                The defaults were chosen on training queries only (the docs' Evaluation page).
            dense_weight: The dense side's share in weighted fusion, 0..1.
            chunks: Rank raw chunks instead (a source may then appear several times; ``id`` is
                the chunk id).

        Returns:
            The documents, best first, with ``score`` and ``score_kind`` set.

        Raises:
            ValueError: a bad ``k``, ``mode``, ``fusion_method`` or ``dense_weight``, or a query
                that is blank or not valid Unicode.
        """
        _check_retrieve(k, mode, fusion_method, dense_weight)
        check_text(query, "query", "there is nothing to search for")
        if self.count() == 0:
            return []
        depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
        key = (lambda chunk_id: chunk_id) if chunks else source_of
        dense = self._dense_hits(query, depth, where, key) if mode != "lexical" else {}
        lexical = self._lexical_hits(query, depth, where, chunks) if mode != "dense" else {}
        ranked, kind = _fused(dense, lexical, mode, fusion_method, dense_weight)
        return self._as_documents(ranked[:k], kind, dense, lexical)

    def _as_documents(
        self, ranked: list[tuple[str, float]], kind: str, dense: dict[str, Document], lexical: dict[str, Document]
    ) -> list[Document]:
        """Each ranked unit as a Document at its best chunk: the dense side's where it found the unit,
        else the chunk BM25 picked (read from Chroma), with both sides' scores in its metadata."""
        texts = self._chunks_by_id(ids_of(lexical[u] for u, _ in ranked if u not in dense))
        results = []
        for unit, score in ranked:
            hit = dense.get(unit) or texts.get(lexical[unit].id or "")
            if hit is None:  # deleted by another client since the BM25 index was checked
                continue
            metadata = {
                **hit.metadata,
                "chunk_id": hit.id,
                "dense_score": dense[unit].score if unit in dense else None,
                "lexical_score": lexical[unit].score if unit in lexical else None,
            }
            results.append(Document(hit.text, metadata, id=unit, score=score, score_kind=kind))
        return results

    def _dense_hits(
        self, query: str, depth: int, where: dict[str, Any] | None, key: Callable[[str], str]
    ) -> dict[str, Document]:
        """The bi-encoder's best ``depth`` units (chunks or sources, by ``key``), each at its best
        chunk; reads deeper into Chroma until that many distinct units are found."""
        total, n = self.count(), depth
        while True:
            found: dict[str, Document] = {}
            hits = self.query(query, k=min(n, total), where=where)
            for chunk_id, chunk in zip(ids_of(hits), hits):
                found.setdefault(key(chunk_id), chunk)
            if len(found) >= depth or len(hits) < min(n, total) or n >= total:
                return dict(list(found.items())[:depth])
            n *= 2

    def _lexical_hits(
        self, query: str, depth: int, where: dict[str, Any] | None, by_chunk: bool
    ) -> dict[str, Document]:
        """BM25's best ``depth`` chunks, or whole documents (each at its best chunk); text not
        fetched yet: ``id`` (the chunk's) and ``score`` only."""
        version = self._version()
        self._lexical.ensure(version, self._stored_chunks)
        allowed = set(self._collection.get(where=where, include=[])["ids"]) if where else None
        if by_chunk:
            hits = [(chunk, chunk, score) for chunk, score in self._lexical.search_chunks(query, depth, allowed)]
        else:
            hits = self._lexical.search_documents(query, depth, allowed)
        return {unit: Document("", id=chunk, score=score) for unit, chunk, score in hits}

    def _version(self) -> str:
        version = (self.client.get_collection(self.collection_name).metadata or {}).get(VERSION_KEY)
        if version is None:  # a collection written before versions existed, or by another tool
            self._stamp()
            return self._version()
        return version

    def all_chunks(self, page: int = 5000) -> tuple[list[str], list[str]]:
        """Every chunk id and text in the collection, read from Chroma in pages."""
        ids: list[str] = []
        texts: list[str] = []
        while (got := self._collection.get(include=["documents"], limit=page, offset=len(ids)))["ids"]:
            ids += got["ids"]
            texts += [text or "" for text in got["documents"]]
        return ids, texts

    def _stored_chunks(self, page: int = 5000) -> StoredChunks:
        stored = StoredChunks([], [], [])
        while (got := self._collection.get(include=["documents", "metadatas"], limit=page, offset=len(stored.ids)))[
            "ids"
        ]:
            stored.ids += got["ids"]
            stored.texts += [text or "" for text in got["documents"]]
            stored.starts += [(meta or {}).get("char_start") for meta in got["metadatas"]]
        return stored

    def _chunks_by_id(self, chunk_ids: list[str]) -> dict[str, Document]:
        if not chunk_ids:
            return {}
        got = self._collection.get(ids=chunk_ids, include=["documents", "metadatas"])
        return {
            chunk_id: Document(text or "", dict(meta or {}), id=chunk_id)
            for chunk_id, text, meta in zip(got["ids"], got["documents"], got["metadatas"])
        }


_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


def _check_collection_name(name: str) -> None:
    """Chroma's rule, checked before Chroma sees the name, with a message that says what to change."""
    if not isinstance(name, str) or not _COLLECTION_NAME.match(name):
        raise ValueError(
            f"collection name {name!r} is not valid: Chroma takes 3-512 characters from letters, digits, "
            "'.', '_' and '-', starting and ending with a letter or a digit (e.g. 'my-docs')"
        )


def _check_retrieve(k: int, mode: str, fusion_method: str, dense_weight: float) -> None:
    _check_k(k)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if fusion_method not in FUSIONS:
        raise ValueError(f"fusion_method must be one of {', '.join(FUSIONS)}; got {fusion_method!r}")
    if not 0 <= dense_weight <= 1:
        raise ValueError(f"dense_weight must be between 0 and 1, got {dense_weight}")


def _fused(
    dense: dict[str, Document], lexical: dict[str, Document], mode: str, fusion_method: str, dense_weight: float
) -> tuple[list[tuple[str, float]], str]:
    """The units (sources or chunks) ranked by ``mode``, best first with their scores, and the scores' kind."""
    rankings = [[(unit, float(hit.score or 0.0)) for unit, hit in side.items()] for side in (dense, lexical) if side]
    if mode != "hybrid" or len(rankings) < 2:  # one side only, or one side found nothing: its scores as they are
        kind = {"dense": "cosine", "lexical": "bm25"}.get(mode) or ("cosine" if dense else "bm25")
        return (rankings[0] if rankings else []), kind
    if fusion_method == "rrf":
        return fusion.rrf(rankings), "rrf"
    return fusion.weighted(rankings, [dense_weight, 1 - dense_weight]), "fused"


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _default() -> str:
    from rag_rerank.models import DEFAULT_BI_ENCODER

    return DEFAULT_BI_ENCODER


def _quiet(show_progress: bool | None, total: int) -> bool:
    return not show_progress if show_progress is not None else total < 100


def _batches(items: Sequence[Document], size: int) -> Iterator[list[Document]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _source_id(doc: Document) -> str:
    if doc.id is not None:
        if not isinstance(doc.id, str) or not doc.id:
            raise ValueError(f"document id must be a non-empty string, got {doc.id!r}")
        return doc.id
    if not isinstance(doc.text, str):
        raise TypeError(f"document text must be a str, got {type(doc.text).__name__}")
    return "sha1-" + hashlib.sha1(doc.text.encode("utf-8")).hexdigest()[:16]


def check_unique_ids(docs: Sequence[Document]) -> None:
    seen: set[str] = set()
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(
                f"item {i} is a {type(doc).__name__}; expected a rag_rerank.Document (Document(text=..., id=...))"
            )
        source_id = _source_id(doc)
        if source_id in seen:
            raise ValueError(f"document id {source_id!r} appears more than once in this ingest; ids must be unique")
        seen.add(source_id)


def _clean_metadata(metadata: dict[str, Any], source_id: str) -> dict[str, Any]:
    for key, value in metadata.items():
        if key in RESERVED_METADATA:
            raise ValueError(f"document {source_id!r}: metadata key {key!r} is reserved for the store")
        ok = (
            value is None
            or isinstance(value, _METADATA_TYPES)
            or (isinstance(value, list) and all(isinstance(v, _METADATA_TYPES) for v in value))
        )
        if not ok:
            raise TypeError(
                f"document {source_id!r}: metadata {key!r} is a {type(value).__name__}; Chroma stores "
                "str, int, float, bool, None or lists of those"
            )
    return dict(metadata)
