"""The one document type the core passes around."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Document:
    """A passage with its metadata.

    ``score`` is set by whoever ranked the document last, and ``score_kind`` says what it is
    (cosine similarity, BM25, a fused score, a cross-encoder logit, an LLM rating, ...: the
    table in ``rag_rerank.scores``). ``id`` is the store id (``"<source_id>#<chunk_index>@<version>"``)
    for retrieved chunks and the source id for documents about to be ingested.
    """

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    score: float | None = None
    score_kind: str | None = None  # what ``score`` means: see rag_rerank.scores

    def with_score(self, score: float, kind: str | None = None) -> Document:
        return replace(self, score=float(score), score_kind=kind, metadata=dict(self.metadata))


TRUNCATED_BY = "truncated_by"  # metadata: the stages that read only part of the text


def mark_truncated(doc: Document, stage: str) -> Document:
    """A copy of ``doc`` whose metadata says that ``stage`` cut its text: truncation is never silent."""
    stages = list(doc.metadata.get(TRUNCATED_BY) or [])
    return replace(doc, metadata={**doc.metadata, TRUNCATED_BY: [*stages, stage]})


def check_text(text: object, what: str, why_needed: str) -> None:
    """``text`` is a str with something in it that can be encoded as UTF-8; else ``TypeError`` or
    ``ValueError`` naming ``what`` ("query", "passage 3") and, for a blank one, ``why_needed``.

    A lone surrogate (JSON ``"\\ud800"``, or bytes decoded with ``errors="surrogateescape"``) is no
    character: tokenizers fail on it with a ``TypeError`` that names neither the text nor the fix."""
    if not isinstance(text, str):
        raise TypeError(f"{what} is a {type(text).__name__}; expected a str")
    if not text.strip():
        raise ValueError(f"{what} is empty; {why_needed}")
    check_unicode(text, what)


def check_unicode(text: str, what: str) -> None:
    """``ValueError`` naming ``what`` and the place where ``text`` holds a lone surrogate (not valid Unicode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} is not valid Unicode: a lone surrogate ({text[error.start]!r}) at character {error.start}; "
            "decode the source bytes with errors='replace', or remove it"
        ) from None


def ids_of(docs: Iterable[Document]) -> list[str]:
    """The documents' ids, in order; ranking and evaluation need every document to have one."""
    ids = [doc.id for doc in docs]
    if None in ids:
        raise ValueError(f"document {ids.index(None)} has no id: give every document an id (Document(..., id=...))")
    return ids  # type: ignore[return-value]


def as_documents(items: Sequence[Document | str], what: str = "documents") -> list[Document]:
    """``items`` as Documents (plain strings accepted); one string where a list belongs is refused by name
    rather than read as a list of its characters."""
    refuse_single(items, what)
    return [as_document(item, i) for i, item in enumerate(items)]


def refuse_single(items: object, what: str) -> None:
    """A str (or one Document) passed where a list of them belongs: say so instead of iterating it."""
    if isinstance(items, (str, bytes, Document)):
        raise TypeError(f"{what} must be a list, got one {type(items).__name__}: wrap it in a list ([...])")


def as_document(item: Document | str, position: int) -> Document:
    """Accept plain strings where documents are expected; reject anything else by name."""
    if isinstance(item, Document):
        return item
    if isinstance(item, str):
        return Document(text=item)
    raise TypeError(f"document {position} is a {type(item).__name__}; expected a rag_rerank.Document or a str")
