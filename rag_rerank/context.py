"""Packing reranked passages into an LLM's context: a token budget, citations, ordering."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rag_rerank.document import Document
from rag_rerank.retrieval.chunking import encoding_for, get_encoding

log = logging.getLogger(__name__)

RAG_PROMPT = """Answer the question using only the numbered sources below. Cite the sources you use \
as [n]. If the sources do not contain the answer, say so.

Sources:
{context}

Question: {question}
Answer:"""


@dataclass
class PackedContext:
    """The context text, the documents in it (with their citation numbers), and what did not fit."""

    text: str
    documents: list[Document]
    citations: list[int]
    tokens: int
    dropped: list[Document] = field(default_factory=list)


def pack_context(
    documents: Sequence[Document],
    *,
    max_tokens: int = 3000,
    model: str | None = None,
    encoding: str | None = None,
    order: Literal["rank", "edges"] = "rank",
    numbered: bool = True,
    separator: str = "\n\n",
) -> PackedContext:
    """Take documents in rank order while they fit in ``max_tokens`` (counted with tiktoken,
    the encoding of ``model`` when it is an OpenAI name, else ``encoding`` or cl100k_base).

    Citation numbers follow rank (the best passage is [1]) whatever the final order.
    ``order="edges"`` puts the best passages at the start and end of the context, the
    weakest in the middle, where long-context models attend least ("lost in the middle").
    A document that does not fit is skipped (reported in ``dropped``) and smaller ones
    after it may still fit.

    Args:
        documents: Ranked documents, best first.
        max_tokens: The context's budget in tokens.
        model: An LLM name whose tiktoken encoding counts the tokens.
        encoding: A tiktoken encoding, where ``model`` names none.
        order: "rank" (best first) or "edges" (best at the start and the end).
        numbered: Prefix each passage with its citation number.
        separator: Between passages.

    Returns:
        The packed text, the documents in it and those dropped.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if order not in ("rank", "edges"):
        raise ValueError(f"order must be 'rank' or 'edges', got {order!r}")
    enc = get_encoding(encoding or (encoding_for(model) if model else "cl100k_base"))
    count = lambda text: len(enc.encode(text, disallowed_special=()))
    separator_tokens = count(separator)
    chosen: list[tuple[int, Document, str]] = []
    dropped: list[Document] = []
    used = 0
    for rank, doc in enumerate(documents, start=1):
        block = f"[{rank}] {doc.text}" if numbered else doc.text
        cost = count(block) + (separator_tokens if chosen else 0)
        if used + cost > max_tokens:
            dropped.append(doc)
            continue
        chosen.append((rank, doc, block))
        used += cost
    if dropped and dropped[0] is documents[0]:
        log.warning(
            "the best document (%r, %d tokens) does not fit in max_tokens=%d and was left out of the "
            "context (PackedContext.dropped); raise max_tokens or cut documents smaller",
            documents[0].id,
            count(documents[0].text),
            max_tokens,
        )
    if order == "edges":
        chosen = chosen[0::2] + chosen[1::2][::-1]
    text = separator.join(block for _, _, block in chosen)
    return PackedContext(text, [doc for _, doc, _ in chosen], [rank for rank, _, _ in chosen], count(text), dropped)
