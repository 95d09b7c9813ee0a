"""Ingest on Ray: each actor holds a bi-encoder and a connection to the same Chroma server, and
ingests the batches of documents it is given with ``ChromaStore.ingest`` itself, so every
guarantee of an in-process ingest holds (each source's new version lands whole before the old one
goes; a source stored already in the same version is skipped, so a re-run resumes where one stopped).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rag_rerank.document import Document
from rag_rerank.retrieval.chunking import ChunkSpec
from rag_rerank.retrieval.embedding import BiEncoder, BiEncoderBackend, BiEncoderDtype
from rag_rerank.retrieval.store import ChromaStore, IngestReport, check_unique_ids
from rag_rerank.scale.runtime import actor_threads, check_pool, start_ray


@dataclass(frozen=True)
class StoreRecipe:
    """What an actor needs to open the same store as the driver: its server, collection,
    bi-encoder and chunking. The bi-encoder's backend and dtype are as the driver asked for them, so
    an actor on another machine (a GPU node, one without OpenVINO) makes its own "auto" choice, as it
    picks its own device."""

    collection: str
    host: str
    port: int
    bi_encoder: str
    backend: BiEncoderBackend
    dtype: BiEncoderDtype | None
    chunking: ChunkSpec

    @classmethod
    def of(cls, store: ChromaStore) -> StoreRecipe:
        if store.host is None or store.port is None:
            raise ValueError(
                "ingest on Ray writes from many processes at once, which an embedded Chroma (one process's "
                "files) does not allow: start a Chroma server (`chroma run --path DIR`) and open the store "
                "with host=... (CLI: --chroma-host)"
            )
        return cls(
            store.collection_name,
            store.host,
            store.port,
            store.bi_encoder.model_name,
            *store.bi_encoder.requested,
            store.chunking,
        )

    def open(self) -> ChromaStore:
        bi_encoder = BiEncoder(self.bi_encoder, dtype=self.dtype, backend=self.backend)
        return ChromaStore(
            self.collection, host=self.host, port=self.port, bi_encoder=bi_encoder, chunking=self.chunking
        )


class _Ingester:
    """A Ray actor: opens the store once, then ingests each batch of pickled documents."""

    def __init__(self, recipe: StoreRecipe, cpus: float):
        actor_threads(cpus)
        self.store = recipe.open()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        docs = [pickle.loads(blob) for blob in batch["document"]]
        report = self.store.ingest(docs, batch_size=len(docs), show_progress=False)
        return {
            "documents": [report.documents],
            "chunks": [report.chunks],
            "truncated": [report.truncated],
            "skipped": [pickle.dumps(report.skipped)],
            "empty": [pickle.dumps(report.empty)],
        }


def ingest_on_ray(
    documents: Iterable[Document],
    store: ChromaStore,
    *,
    actors: int = 2,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    batch_size: int = 128,
    address: str | None = None,
) -> IngestReport:
    """Ingest ``documents`` into ``store`` (a Chroma server's collection) from ``actors`` Ray actors,
    ``batch_size`` documents per task; what ``store.ingest`` would return, summed over the batches.

    Starts a local Ray unless one is running or ``address`` names a cluster; each actor loads the
    bi-encoder once, reserves ``cpus_per_actor`` CPUs (torch gets that many threads) and
    ``gpus_per_actor`` GPUs. Documents are read and checked here (ids unique), then shipped to
    the actors; chunking, embedding and writing happen in the actors.
    """
    check_pool(actors, cpus_per_actor)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    recipe = StoreRecipe.of(store)
    docs = list(documents)
    check_unique_ids(docs)
    report = IngestReport()
    if not docs:
        return report
    ray = start_ray(address)
    rows = ray.data.from_items([{"document": pickle.dumps(doc)} for doc in docs])
    results = rows.map_batches(
        _Ingester,
        fn_constructor_kwargs={"recipe": recipe, "cpus": cpus_per_actor},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    for row in results.iter_rows():
        report.documents += int(row["documents"])
        report.chunks += int(row["chunks"])
        report.truncated += int(row["truncated"])
        report.skipped += pickle.loads(row["skipped"])
        report.empty += pickle.loads(row["empty"])
    return report
