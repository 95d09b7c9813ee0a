"""The teacher's scores: what a slow reranker says of each training query's first-stage candidates.

The teacher's score is its own judgement alone (an LLM's log-likelihood or log-odds, a cross-encoder's
logit), never fused with the first stage: the first stage's score is kept beside it, and fusion happens
where the student runs (``retrieval.fusion.with_first_stage``), as it does for the LLM.

They are kept in a JSON-lines file (gzip where the name ends in ``.gz``): a header line with the
teacher's provenance (its spec, model and weights, precision, prompt), the first stage (how candidates
were retrieved, the bi-encoder, the chunking), the depth and the command, then one line per query,
written as soon as that query is scored. A run again reads the file and scores only the queries it
lacks, so an interrupted run continues where it stopped and nothing is scored twice; rows are added
only by the same teacher over the same first stage. A line or gzip member cut short by a crash is
dropped with a warning, and the file is rewritten whole before anything is added to it, so a file
interrupted again and again still reads.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rag_rerank.document import Document, ids_of
from rag_rerank.retrieval.fusion import first_stage_scores
from rag_rerank.training.queries import TrainingQuery

if TYPE_CHECKING:
    from rag_rerank.rerank.base import Reranker
    from rag_rerank.retrieval.store import ChromaStore

log = logging.getLogger(__name__)

FORMAT = "rag-rerank teacher scores 2"
FUSED_FORMAT = "rag-rerank teacher scores 1"  # scores as that version kept them, some fused: see recover_pure
FORMAT_1_FUSION = 0.4  # the query-likelihood teacher's share of the fused scores format 1 kept
# How the candidates a teacher scores are retrieved (``ChromaStore.retrieve``'s settings), kept in the header.
FIRST_STAGE: dict[str, Any] = {"mode": "hybrid", "fusion_method": "weighted", "dense_weight": 0.5}


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
        ValueError: the file was made by another teacher or at another depth (append to one file per
            teacher), or holds fused scores (``FUSED_FORMAT``: ``recover_pure`` converts it).
    """

    def __init__(self, path: str | Path, teacher: str, depth: int, command: str = ""):
        self.path = Path(path)
        self.header: dict[str, Any] = {"format": FORMAT, "teacher": teacher, "depth": depth, "command": command}
        self.rows: dict[tuple[str, str], Labelled] = {}
        self._damaged = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        header, rows, self._damaged = _read(self.path)
        for name in ("teacher", "depth"):
            if header.get(name) != self.header[name]:
                raise ValueError(
                    f"{self.path} holds the scores of {name} {header.get(name)!r}, not {self.header[name]!r}: "
                    "keep one file per teacher and depth (give another --scores file)"
                )
        self.header = header
        self.rows = {row.key: row for row in rows}

    def claim(self, provenance: dict[str, Any]) -> None:
        """Check that rows of the teacher and first stage ``provenance`` describes (``teacher_provenance``,
        ``first_stage_of``) may be added: a new file takes it into its header; an existing one must hold
        the same, else ``ValueError`` naming what differs."""
        if not self.path.exists() or not self.rows:
            self.header.update(provenance)
            self._damaged = self.path.exists()  # a file of a header alone: rewritten with this one first
            return
        differs = {k: (self.header.get(k), v) for k, v in provenance.items() if self.header.get(k) != v}
        if differs:
            said = "; ".join(f"{k}: the file's {old!r}, this run's {new!r}" for k, (old, new) in differs.items())
            raise ValueError(
                f"{self.path} holds another teacher's scores ({said}); rows of two teachers do not mix: "
                "give another --scores file"
            )

    def add(self, row: Labelled) -> None:
        """Keep one query's scores: checked, then appended to the file at once (a file damaged by an
        earlier interruption is first rewritten with the rows it holds whole)."""
        check_finite(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._damaged:
            write_rows(self.path, self.header, self.rows.values())
            self._damaged = False
        lines = ([] if self.path.exists() else [self.header]) + [_fields(row)]
        with _open(self.path, "a") as handle:
            handle.write("".join(json.dumps(line) + "\n" for line in lines))
        self.rows[row.key] = row


def _fields(row: Labelled) -> dict[str, Any]:
    return {k: v for k, v in asdict(row).items() if k != "ranks" or v}  # kept rows hold every candidate


def write_rows(path: Path, header: dict[str, Any], rows: Iterable[Labelled]) -> None:
    """``header`` and ``rows`` as the whole of ``path``, written beside it and then moved over it."""
    partial = path.with_name(f".partial.{path.name}")  # the same suffix: gzip where the file is
    with _open(partial, "w") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in [header, *map(_fields, rows)]))
    os.replace(partial, path)


def read_rows(path: str | Path) -> tuple[dict[str, Any], list[Labelled]]:
    """A teacher-scores file's header and rows; a damaged end (a write cut short) is dropped."""
    header, rows, _ = _read(Path(path))
    return header, rows


def _read(path: Path) -> tuple[dict[str, Any], list[Labelled], bool]:
    """(header, rows, whether the end was damaged)."""
    lines, damaged = _lines(path)
    if not lines:
        raise ValueError(f"{path} is empty: no teacher header")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = {}
    if isinstance(header, dict) and header.get("format") == FUSED_FORMAT:
        raise ValueError(
            f"{path} is of the first format (before rag-rerank kept each teacher's own scores; a query-likelihood "
            "teacher's were fused with the first stage): convert it with "
            "rag_rerank.training.teacher.recover_pure(path, new_path, provenance), or label again"
        )
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a teacher-scores file (its first line is no {FORMAT!r} header)")
    rows, cut = _rows(path, lines)
    return header, rows, damaged or cut


def _rows(path: Path, lines: list[str]) -> tuple[list[Labelled], bool]:
    """The rows after the header line, and whether the last was cut short (dropped, with a warning)."""
    rows = []
    for number, line in enumerate(lines[1:], 2):
        try:
            rows.append(_row(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a teacher-scores row ({error})") from None
            log.warning("%s: dropped its last line, cut short (%s); that query is scored again", path, error)
            return rows, True
    return rows, False


def _row(fields: dict[str, Any]) -> Labelled:
    """A row from its JSON object (lists as tuples)."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return Labelled(**values)


def _lines(path: Path) -> tuple[list[str], bool]:
    """The file's lines, and whether it ends damaged: a gzip stream cut short ends where it breaks
    (``EOFError``; ``zlib.error`` where another run appended after the break)."""
    lines: list[str] = []
    try:
        with _open(path, "r") as handle:
            lines += (line for line in handle if line.strip())
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        log.warning("%s: its end is damaged (%s); reading what came before", path, error)
        return lines, True
    return lines, bool(lines) and not lines[-1].endswith("\n")  # a last row without its newline: rewritten


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
        ValueError: a query of a corpus without a store; a file holding another teacher's or first
            stage's scores (before anything is scored).
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
    if reranker is not None:
        scores.claim({"provenance": teacher_provenance(reranker), "first_stage": first_stage_of(stores.values())})
    for query in tqdm(todo, desc=f"teacher {scores.header['teacher']}", disable=not show_progress):
        candidates = stores[query.corpus].retrieve(query.text, int(scores.header["depth"]), **FIRST_STAGE)
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
        tuple(first_stage_scores([doc.score for doc in candidates])),
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


def make_teacher(spec: str, *, cache_file: str | Path | None = None) -> Reranker:
    """The reranker ``spec`` names, as a teacher: its own judgement, not fused with the first stage.

    Args:
        spec: ``cross-encoder[:MODEL]`` (default: the shipped model; any hub cross-encoder such as
            ``cross-encoder/ms-marco-MiniLM-L-6-v2`` online; its logits alone) or an LLM reranker,
            ``KIND[:MODEL]`` (``query-likelihood``, ``yes-no``...: ``rag_rerank.rerank.llm.kinds``;
            the query likelihood alone, weight 1).
        cache_file: An LLM teacher keeps each pair's score here too (a rerank cut short is not paid twice).
    """
    from rag_rerank.rerank.llm import JudgementCache
    from rag_rerank.rerank.llm.kinds import llm_reranker, parse_spec

    kind, _, model = spec.partition(":")
    if kind == "cross-encoder":
        from rag_rerank import CrossEncoderReranker
        from rag_rerank.models import default_cross_encoder

        return CrossEncoderReranker(model or default_cross_encoder(), first_stage_weight=0.0, fusion_weight=None)
    pure = {"weight": 1.0} if parse_spec(spec)[0] == "query-likelihood" else {}
    # no deadline: a teacher's score must be the teacher's, not a first-stage fallback
    return llm_reranker(spec, cache=JudgementCache(cache_file) if cache_file else None, timeout=None, **pure)


def teacher_provenance(teacher: Reranker) -> dict[str, Any]:
    """What a teacher's scores depend on, for the file's header: its kind, its model (for a local LLM:
    name, backend, precision, device, runtime and a hash of its weights; for a cross-encoder: name,
    backend and precision), its prompt.

    Raises:
        ValueError: the teacher fuses its scores with the first stage (a student must learn its own).
    """
    fusing = [
        f"{name} {value}"
        for name, value, own in (
            ("weight", getattr(teacher, "weight", 1.0), 1.0),  # the query-likelihood LLM's share
            ("first_stage_weight", getattr(teacher, "first_stage_weight", 0.0), 0.0),
            ("fusion_weight", getattr(teacher, "fusion_weight", None), None),
        )
        if value != own
    ]
    if fusing:
        raise ValueError(
            f"the teacher fuses its scores with the first stage ({', '.join(fusing)}): a student must learn the "
            "teacher's own judgement and be fused where it runs; build it with make_teacher"
        )
    llm = getattr(teacher, "llm", None)
    if llm is not None:
        from rag_rerank.rerank.llm.base import model_key

        kind = getattr(teacher, "name", type(teacher).__name__)
        return {"kind": kind, "model": model_key(llm), "prompt": getattr(teacher, "prompt", None)}
    plan = getattr(teacher, "plan", None)
    return {
        "kind": type(teacher).__name__,
        "model": getattr(teacher, "model_name", None),
        "precision": f"{plan.backend} {plan.dtype}" if plan is not None else None,
    }


def first_stage_of(stores: Iterable[ChromaStore]) -> dict[str, Any]:
    """How the candidates were found, for the file's header: ``FIRST_STAGE``'s settings, the
    bi-encoders and the chunking of the stores."""
    stores = list(stores)
    return {
        **FIRST_STAGE,
        "bi_encoder": sorted({store.bi_encoder.model_name for store in stores}),
        "chunking": sorted({repr(store.chunking) for store in stores}),
    }


def recover_pure(path: str | Path, new_path: str | Path, provenance: dict[str, Any]) -> Path:
    """A file of the first format rewritten with the teacher's own scores.

    Format 1 kept what its teacher's ``rerank`` gave: the query-likelihood reranker fused with the first
    stage (``FORMAT_1_FUSION``), a teacher named ``... fused W with the first stage`` at ``W``: for
    these the teacher's own min-max scaled score is ``(fused - (1 - w) * first stage) / w`` (the same
    order and per-query shape as its raw score). Other LLM teachers' scores were their own and are
    kept as they are; a cross-encoder's carried its learned first-stage prior, which cannot be told
    apart from its logit, so that file is refused (label again).

    Args:
        path: The format-1 file.
        new_path: Where the recovered file goes (a ``FORMAT`` file).
        provenance: What is known of the teacher and the first stage (``provenance``, ``first_stage``).

    Returns:
        ``new_path``.
    """
    header, rows = _format_1(Path(path))
    weight = _format_1_share(str(header.get("teacher", "")), path)
    pure = [
        dataclasses.replace(
            row, teacher=tuple((t - (1 - weight) * f) / weight for t, f in zip(row.teacher, row.first_stage))
        )
        for row in rows
    ]
    for row in pure:
        check_finite(row)
    recovered = {**header, "format": FORMAT, **provenance, "recovered_from": f"{Path(path).name}, fused at {weight}"}
    write_rows(Path(new_path), recovered, pure)
    return Path(new_path)


def _format_1(path: Path) -> tuple[dict[str, Any], list[Labelled]]:
    """A format-1 file's header and whole rows (a last line cut short dropped)."""
    lines, _ = _lines(path)
    header = json.loads(lines[0]) if lines else {}
    if header.get("format") != FUSED_FORMAT:
        raise ValueError(f"{path} is not a teacher-scores file of the first format ({FUSED_FORMAT!r})")
    return header, _rows(path, lines)[0]


def _format_1_share(teacher: str, path: str | Path) -> float:
    """The teacher's share of the scores a format-1 file of ``teacher`` kept (1.0: its own)."""
    spec, fused, share = teacher.partition(" fused ")
    kind = spec.partition(":")[0]
    if kind == "cross-encoder":
        raise ValueError(
            f"{path}: a cross-encoder teacher's format-1 scores carry its first-stage prior, which cannot be "
            "removed: label again"
        )
    if fused and kind == "query-likelihood":
        raise ValueError(f"{path}: a query-likelihood teacher fused twice cannot be recovered: label again")
    if fused:
        weight = float(share.split()[0])
        if weight <= 0:
            raise ValueError(f"{path}: its teacher had no share of the fused scores ({teacher!r}): label again")
        return weight
    return FORMAT_1_FUSION if kind == "query-likelihood" else 1.0
