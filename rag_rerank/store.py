"""The Chroma-backed first stage: ingest documents as embedded chunks, query them back.

Chunks get stable ids ``"<source_id>#<chunk_index>"``; re-ingesting a source first
deletes its old chunks, so a document that shrank leaves nothing stale behind. Embeddings
always come from our bi-encoder (Chroma's default embedding function is never used: it
downloads a model). The collection uses cosine distance on normalised vectors, and
``query`` returns ``score = 1 - distance``, the cosine similarity (-1..1).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rag_rerank.chunking import ChunkSpec, chunk_text
from rag_rerank.document import Document
from rag_rerank.embedding import BiEncoder

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "rag_rerank"
DEFAULT_PATH = ".chroma"
RESERVED_METADATA = ("source_id", "chunk_index", "chunk_count")
_METADATA_TYPES = (str, int, float, bool)


@dataclass
class IngestReport:
    """What an ingest wrote: sources, chunks, and the ids of sources with no text."""

    documents: int = 0
    chunks: int = 0
    empty: list[str] = field(default_factory=list)


class ChromaStore:
    """A Chroma collection of embedded chunks.

    Embedded by default (``PersistentClient`` under ``path``); pass ``host`` (and ``port``)
    to use a Chroma server, or a ready ``client``.
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
        self.bi_encoder = bi_encoder if isinstance(bi_encoder, BiEncoder) else BiEncoder(bi_encoder or _default())
        self.chunking = chunking
        self.client = client or _make_client(path, host, port)
        self.path = Path(path) if client is None and not host else None  # the embedded store's folder
        self.collection_name = collection
        self._collection = self.client.get_or_create_collection(
            collection,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedding_model": self.bi_encoder.model_name, "embedding_dimension": self.bi_encoder.dimension},
        )
        self._check_embedding_model()

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
        """Chunk, embed and upsert ``documents``; returns what was written.

        A document without an ``id`` gets one from a hash of its text, so ingesting the
        same text twice stays idempotent.
        """
        from tqdm.auto import tqdm

        docs = list(documents)
        total = len(docs)
        _check_unique_ids(docs)
        report = IngestReport()
        progress = tqdm(total=total, desc="Ingesting", unit="doc", disable=_quiet(show_progress, total))
        for batch in _batches(docs, batch_size):
            self._ingest_batch(batch, report)
            progress.update(len(batch))
        progress.close()
        if report.empty:
            log.warning("%d document(s) had no text and were not stored: %s", len(report.empty), report.empty[:10])
        return report

    def _ingest_batch(self, batch: Sequence[Document], report: IngestReport) -> None:
        ids, texts, metadatas, sources = [], [], [], []
        for doc in batch:
            source_id = _source_id(doc)
            sources.append(source_id)
            chunks = chunk_text(doc.text, self.chunking)
            if not chunks:
                report.empty.append(source_id)
                continue
            base = _clean_metadata(doc.metadata, source_id)
            for index, chunk in enumerate(chunks):
                ids.append(f"{source_id}#{index}")
                texts.append(chunk)
                metadatas.append({**base, "source_id": source_id, "chunk_index": index, "chunk_count": len(chunks)})
            report.documents += 1
        self._collection.delete(where={"source_id": {"$in": sources}})
        if not ids:
            return
        embeddings = self.bi_encoder.embed_documents(texts)
        limit = self.client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            end = start + limit
            self._collection.upsert(
                ids=ids[start:end],
                embeddings=embeddings[start:end],
                documents=texts[start:end],
                metadatas=metadatas[start:end],
            )
        report.chunks += len(ids)

    def delete(self, source_ids: Sequence[str]) -> None:
        """Remove every chunk of the given sources."""
        if source_ids:
            self._collection.delete(where={"source_id": {"$in": list(source_ids)}})

    def query(self, query: str, k: int = 10, where: dict[str, Any] | None = None) -> list[Document]:
        """The ``k`` chunks closest to ``query``, best first, optionally filtered by metadata.

        ``where`` is a Chroma metadata filter, e.g. ``{"year": {"$gte": 2020}}``.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
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
            Document(text=text, metadata=dict(meta or {}), id=chunk_id, score=1.0 - float(distance))
            for chunk_id, text, meta, distance in zip(
                result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
            )
        ]


def _default() -> str:
    from rag_rerank.models import DEFAULT_BI_ENCODER

    return DEFAULT_BI_ENCODER


def _make_client(path: str | Path, host: str | None, port: int) -> Any:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if host:
        return chromadb.HttpClient(host=host, port=port, settings=settings)
    Path(path).mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


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


def _check_unique_ids(docs: Sequence[Document]) -> None:
    seen: set[str] = set()
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"item {i} is a {type(doc).__name__}; expected a rag_rerank.Document")
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
