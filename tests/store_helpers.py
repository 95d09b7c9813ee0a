"""Helpers for the crash tests: what a store holds, per source and version, read back whole."""

from __future__ import annotations

from collections import defaultdict

from rag_rerank import ChromaStore
from rag_rerank.retrieval.lexical import join_chunks


def versions_by_source(store: ChromaStore) -> dict[str, dict[str, list[tuple[int, int, str, int]]]]:
    """source -> version -> its chunks as (chunk_index, char_start, text, chunk_count)."""
    got = store._collection.get(include=["documents", "metadatas"])
    found: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for text, meta in zip(got["documents"], got["metadatas"]):
        found[meta["source_id"]][meta["version"]].append(
            (meta["chunk_index"], meta["char_start"], text, meta["chunk_count"])
        )
    return found


def whole_text(chunks: list[tuple[int, int, str, int]]) -> str | None:
    """The version's text if all its chunks are there, else None."""
    indexes = sorted(index for index, *_ in chunks)
    if indexes != list(range(chunks[0][3])):
        return None
    return join_chunks([text for _, _, text, _ in chunks], [start for _, start, _, _ in chunks])
