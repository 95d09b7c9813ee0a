"""The teacher's scores: what a slow reranker says of each training query's first-stage candidates.

They are kept in a JSON-lines file (gzip where the name ends in ``.gz``): a header line naming the
teacher, the first stage and the command, then one line per query, written as soon as that query is
scored. A run again reads the file and scores only the queries it lacks, so an interrupted run continues
where it stopped and nothing is scored twice; a line cut short by a crash is dropped with a warning.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rag_rerank.document import Document, ids_of
from rag_rerank.rerank.llm.query_likelihood import first_stage_scores
from rag_rerank.training.queries import TrainingQuery

if TYPE_CHECKING:
    from rag_rerank.rerank.base import Reranker
    from rag_rerank.retrieval.store import ChromaStore

log = logging.getLogger(__name__)

FORMAT = "rag-rerank teacher scores 1"


@dataclass(frozen=True)
class Labelled:
    """One query's first-stage candidates in first-stage order, with the first stage's and the teacher's
    score of each (no human judgement)."""

    corpus: str
    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    passages: tuple[str, ...]
    first_stage: tuple[float, ...]
    teacher: tuple[float, ...]
    written_for: str | None = None
    ranks: tuple[int, ...] = ()  # first-stage positions (0 = first) where only some candidates are here

    @property
    def key(self) -> tuple[str, str]:
        return self.corpus, self.query_id

    def positions(self) -> tuple[int, ...]:
        """Each candidate's first-stage position, 0 for the first."""
        return self.ranks or tuple(range(len(self.passages)))


class NonFiniteTeacherScore(ValueError):
    """The teacher gave a candidate a score that is NaN or infinite: nothing can be learned from it."""


class TeacherScores:
    """The kept scores of one teacher over one first stage (see the module's docstring).

    Args:
        path: The file (``.jsonl`` or ``.jsonl.gz``); created on the first ``add``.
        teacher: The teacher's name, as a reranker spec (``query-likelihood:gemma-3-270m``).
        depth: First-stage candidates per query.
        command: How the file was made (kept in its header).

    Raises:
        ValueError: the file was made by another teacher or at another depth (append to one file per teacher).
    """

    def __init__(self, path: str | Path, teacher: str, depth: int, command: str = ""):
        self.path = Path(path)
        self.header: dict[str, Any] = {"format": FORMAT, "teacher": teacher, "depth": depth, "command": command}
        self.rows: dict[tuple[str, str], Labelled] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        header, rows = read_rows(self.path)
        for name in ("teacher", "depth"):
            if header.get(name) != self.header[name]:
                raise ValueError(
                    f"{self.path} holds the scores of {name} {header.get(name)!r}, not {self.header[name]!r}: "
                    "keep one file per teacher and depth (give another --scores file)"
                )
        self.header = header
        self.rows = {row.key: row for row in rows}

    def add(self, row: Labelled) -> None:
        """Keep one query's scores: checked, then appended to the file at once."""
        check_finite(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fields = {k: v for k, v in asdict(row).items() if k != "ranks" or v}  # kept rows hold every candidate
        lines = ([] if self.path.exists() else [self.header]) + [fields]
        with _open(self.path, "a") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))
        self.rows[row.key] = row


def read_rows(path: str | Path) -> tuple[dict[str, Any], list[Labelled]]:
    """A teacher-scores file's header and rows; a damaged last line (a write cut short) is dropped."""
    path = Path(path)
    lines = list(_lines(path))
    if not lines:
        raise ValueError(f"{path} is empty: no teacher header")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a teacher-scores file (its first line is no {FORMAT!r} header)")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        try:
            rows.append(_row(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a teacher-scores row ({error})") from None
            log.warning("%s: dropped its last line, cut short (%s); that query is scored again", path, error)
    return header, rows


def _row(fields: dict[str, Any]) -> Labelled:
    """A row from its JSON object (lists as tuples)."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return Labelled(**values)


def _lines(path: Path) -> Iterator[str]:
    """The file's lines; a gzip stream cut short ends where it breaks."""
    try:
        with _open(path, "r") as handle:
            for line in handle:
                if line.strip():
                    yield line
    except (EOFError, gzip.BadGzipFile) as error:
        log.warning("%s: its end is damaged (%s); reading what came before", path, error)


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]  # text mode: str
    return path.open(mode, encoding="utf-8")


def check_finite(row: Labelled) -> None:
    """``NonFiniteTeacherScore`` naming the query and document of the first score that is NaN or infinite,
    and ``ValueError`` where the row's lists differ in length."""
    lengths = {len(row.doc_ids), len(row.passages), len(row.first_stage), len(row.teacher)}
    if len(lengths) != 1:
        raise ValueError(
            f"query {row.query_id!r} of {row.corpus}: its candidates, passages and scores differ in number"
        )
    for doc_id, score in zip(row.doc_ids, row.teacher):
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise NonFiniteTeacherScore(
                f"the teacher scored document {doc_id!r} for query {row.query_id!r} of {row.corpus} as {score!r}: "
                "a teacher must give every candidate a finite score (check the model and its precision)"
            )


def label(
    queries: Iterable[TrainingQuery],
    stores: dict[str, ChromaStore],
    teacher: Callable[[], Reranker],
    scores: TeacherScores,
    *,
    show_progress: bool = True,
) -> list[Labelled]:
    """Score each query's first-stage candidates with the teacher, skipping the queries ``scores`` holds.

    Args:
        queries: The training queries (``collection_queries``, ``read_queries``).
        stores: Each corpus's store, by corpus name.
        teacher: Makes the reranker (any; its score for each candidate is kept), called only where a
            query is left to score (``functools.partial(make_teacher, spec)``).
        scores: Where the scores are kept (and read from).
        show_progress: A progress bar.

    Returns:
        The rows of every query asked for, those already kept included.

    Raises:
        ValueError: a query of a corpus without a store.
        NonFiniteTeacherScore: the teacher gave a NaN or infinite score (the rows before it stay kept).
    """
    from tqdm.auto import tqdm

    queries = list(queries)
    missing = sorted({q.corpus for q in queries} - set(stores))
    if missing:
        raise ValueError(f"no store for corpus {', '.join(missing)}: give its collection (--data)")
    todo = [q for q in queries if (q.corpus, q.query_id) not in scores.rows]
    if len(todo) < len(queries):
        log.info("%s: %d of %d queries already scored", scores.path, len(queries) - len(todo), len(queries))
    reranker = teacher() if todo else None
    for query in tqdm(todo, desc=f"teacher {scores.header['teacher']}", disable=not show_progress):
        candidates = stores[query.corpus].retrieve(query.text, int(scores.header["depth"]))
        if candidates:
            scores.add(labelled(query, candidates, reranker))  # type: ignore[arg-type]  # made: todo is not empty
    return [scores.rows[key] for q in queries if (key := (q.corpus, q.query_id)) in scores.rows]


class TeacherFellBack(RuntimeError):
    """An LLM teacher left candidates unscored (an error, a deadline): their scores would be the
    first stage's, not the teacher's, so the query is not kept."""


def labelled(query: TrainingQuery, candidates: Sequence[Document], teacher: Reranker) -> Labelled:
    """One query's row: its candidates in first-stage order with both scores."""
    ranked = {doc.id: doc.score for doc in teacher_ranking(teacher, query.text, candidates)}
    ids = ids_of(candidates)
    return Labelled(
        query.corpus,
        query.query_id,
        query.text,
        tuple(ids),
        tuple(doc.text for doc in candidates),
        tuple(first_stage_scores(candidates)),
        tuple(math.nan if ranked.get(doc_id) is None else float(ranked[doc_id]) for doc_id in ids),  # type: ignore[arg-type]
        query.written_for,
    )


def teacher_ranking(teacher: Reranker, query: str, candidates: Sequence[Document]) -> list[Document]:
    """The teacher's ranking; ``TeacherFellBack`` where an LLM reranker reports candidates it did not score."""
    report = getattr(teacher, "rerank_with_report", None)
    if report is None:
        return teacher.rerank(query, candidates)
    result = report(query, candidates)
    if result.fallbacks:
        raise TeacherFellBack(
            f"the teacher did not score every candidate of query {query!r}: "
            f"{'; '.join(result.fallbacks[:3])}. Nothing of that query was kept; fix the cause and run again"
        )
    return list(result.documents)


def make_teacher(spec: str, *, fusion: float | None = None, cache_file: str | Path | None = None) -> Reranker:
    """The reranker ``spec`` names, as a teacher.

    Args:
        spec: ``cross-encoder[:MODEL]`` (default: the shipped model; any hub cross-encoder such as
            ``cross-encoder/ms-marco-MiniLM-L-6-v2`` online) or an LLM reranker, ``KIND[:MODEL]``
            (``query-likelihood``, ``yes-no``...: ``rag_rerank.rerank.llm.kinds``).
        fusion: Fuse the teacher's scores with the first stage's, this share for the teacher
            (min-max scaled per query, as the query-likelihood reranker does); None: its own scores.
        cache_file: An LLM teacher keeps each pair's score here too (a rerank cut short is not paid twice).
    """
    from rag_rerank.rerank.llm import JudgementCache
    from rag_rerank.rerank.llm.kinds import llm_reranker

    kind, _, model = spec.partition(":")
    if kind == "cross-encoder":
        from rag_rerank import CrossEncoderReranker
        from rag_rerank.models import default_cross_encoder

        teacher: Reranker = CrossEncoderReranker(model or default_cross_encoder())
    else:
        # no deadline: a teacher's score must be the teacher's, not a first-stage fallback
        teacher = llm_reranker(spec, cache=JudgementCache(cache_file) if cache_file else None, timeout=None)
    return teacher if fusion is None else FusedTeacher(teacher, fusion)


class FusedTeacher:
    """``weight * minmax(teacher) + (1 - weight) * minmax(first stage)`` over each query's candidates."""

    def __init__(self, teacher: Reranker, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the teacher's fusion weight must be between 0 and 1, got {weight}")
        self.teacher, self.weight = teacher, weight

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        from rag_rerank.document import as_documents
        from rag_rerank.rerank.llm.base import scored_first
        from rag_rerank.retrieval.fusion import minmax

        docs = as_documents(documents)
        own = {doc.id: doc.score for doc in teacher_ranking(self.teacher, query, docs)}
        raw = [own.get(doc.id) for doc in docs]
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in raw):
            raise NonFiniteTeacherScore(
                f"the teacher gave {raw} for query {query!r}: a finite score for each candidate is needed"
            )
        mine = minmax([float(s) for s in raw])  # type: ignore[arg-type]  # all numbers: checked
        fused = [self.weight * t + (1 - self.weight) * f for t, f in zip(mine, first_stage_scores(docs))]
        return scored_first(docs, fused, "fused")
