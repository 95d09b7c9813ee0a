"""Reranking whole files: each row a query and its candidates, scored and written back.

A row is ``{"query": str, "candidates": [str | {"text": str, ...}, ...], ...}`` (other fields,
such as a query id, pass through). The output row is the input row plus ``scores``, one per
candidate in the input's order (the reranker's score: the cross-encoder's logit, fused with the
first-stage order when the model was trained so: give candidates best first), ``score_kind``
(what the scores are), ``truncated`` (the indices of the candidates the model read only in part,
``truncated_by`` the stage that cut each) and ``rerank_ms``. JSONL or Parquet in; the same format out.
For offline evaluation, distillation (the scores are soft labels) and backfills.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rag_rerank.document import TRUNCATED_BY, Document
from rag_rerank.rerank.base import check_returned

if TYPE_CHECKING:
    from rag_rerank.rerank.base import Reranker

FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


def file_format(path: str | Path) -> str:
    """``"jsonl"`` or ``"parquet"``, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: rerank files are .jsonl or .parquet, not {suffix or 'files without a suffix'!r}")
    return FORMATS[suffix]


def candidates_of(row: Mapping[str, Any], where: str) -> tuple[str, list[Document]]:
    """The row's query and its candidates as documents (ids: their positions), checked."""
    query, candidates = row.get("query"), row.get("candidates")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: 'query' must be a non-empty string, got {query!r}")
    if not isinstance(candidates, Sequence) or isinstance(candidates, (str, bytes)):
        raise TypeError(f"{where}: 'candidates' must be a list of strings or of {{'text': ...}} objects")
    docs = []
    for i, item in enumerate(candidates):
        text = item.get("text") if isinstance(item, Mapping) else item
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: candidate {i} has no text (a non-empty string, or an object with 'text')")
        docs.append(Document(text, id=str(i)))
    return query, docs


def rerank_row(reranker: Reranker, row: Mapping[str, Any], where: str = "row") -> dict[str, Any]:
    """``row`` plus ``scores`` (input order), what they are (``score_kind``: see ``rag_rerank.scores``),
    ``truncated`` (indices of candidates read in part; ``truncated_by``: by which stage) and ``rerank_ms``."""
    query, docs = candidates_of(row, where)
    started = time.perf_counter()
    ranked = reranker.rerank(query, docs) if docs else []
    elapsed = (time.perf_counter() - started) * 1000
    check_returned(docs, ranked, where)
    scores = [0.0] * len(docs)
    truncated: dict[int, str] = {}  # candidate index -> the stage that read it in part
    for doc in ranked:
        scores[int(doc.id or 0)] = float(doc.score or 0.0)
        if stages := doc.metadata.get(TRUNCATED_BY):
            truncated[int(doc.id or 0)] = stages[-1]
    return {
        **row,
        "scores": scores,
        "score_kind": ranked[0].score_kind if ranked else None,
        "truncated": sorted(truncated),
        "truncated_by": [truncated[i] for i in sorted(truncated)],
        "rerank_ms": elapsed,
    }


def read_rows(path: str | Path, batch_rows: int = 64) -> Iterator[list[dict[str, Any]]]:
    """The file's rows, ``batch_rows`` at a time, without reading it whole."""
    if file_format(path) == "parquet":
        parquet = _pyarrow_parquet()
        for batch in parquet.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield batch.to_pylist()
        return
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            rows.append({**parse_row(line, f"{path}:{line_no}"), "_line": line_no})
            if len(rows) == batch_rows:
                yield rows
                rows = []
    if rows:
        yield rows


def arrow_table(rows: list[dict[str, Any]]) -> Any:
    """Scored rows as an Arrow table, the added columns with their fixed types."""
    import pyarrow as pa

    types = {
        "scores": pa.list_(pa.float64()),
        "score_kind": pa.string(),
        "truncated": pa.list_(pa.int64()),
        "truncated_by": pa.list_(pa.string()),
        "rerank_ms": pa.float64(),
    }
    table = pa.Table.from_pylist(rows)
    for name, kind in types.items():
        if name in table.column_names:
            index = table.column_names.index(name)
            table = table.set_column(index, pa.field(name, kind), table.column(name).cast(kind))
    return table


def parse_row(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a row (a JSON object), or an error naming ``where``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise TypeError(f"{where}: each line must be a JSON object")
    return row


class RowWriter:
    """Writes rows to a .jsonl or .parquet file, batch by batch (the Parquet schema from the first)."""

    def __init__(self, path: str | Path):
        self.path, self.format = Path(path), file_format(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: Any = None  # the open file (JSONL) or ParquetWriter, closed by close()
        if self.format == "jsonl":
            self._file = self.path.open("w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.format == "jsonl":
            self._file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            return
        table = arrow_table(rows)
        if self._file is None:
            self._file = _pyarrow_parquet().ParquetWriter(self.path, table.schema)
        self._file.write_table(table.cast(self._file.schema))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@runtime_checkable
class RowsReranker(Protocol):
    """A reranker that reads a file's rows itself and yields them scored, in order (``RayReranker``)."""

    def rerank_rows_of(self, source: str | Path) -> Iterator[list[dict[str, Any]]]: ...


def rerank_file(
    source: str | Path,
    target: str | Path,
    reranker: Reranker | RowsReranker,
    *,
    batch_rows: int = 64,
    show_progress: bool = True,
) -> int:
    """Rerank every row of ``source`` into ``target`` (same format, same row order); the rows written.

    ``reranker`` is any reranker (in this process), or a ``RayReranker`` (its actors read the
    file in parallel and score the rows; this process writes them in order).
    """
    from tqdm.auto import tqdm

    if Path(source).resolve() == Path(target).resolve():
        raise ValueError(f"{target}: the output would overwrite the input; write to another file")
    file_format(target)
    batches = (
        reranker.rerank_rows_of(source)
        if isinstance(reranker, RowsReranker)
        else _in_process(source, reranker, batch_rows)
    )
    writer = RowWriter(target)
    written = 0
    try:
        with tqdm(desc="Reranking", unit="query", disable=not show_progress) as progress:
            for rows in batches:
                writer.write(rows)
                written += len(rows)
                progress.update(len(rows))
    finally:
        writer.close()
    return written


def _in_process(source: str | Path, reranker: Reranker, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    index = 0
    for rows in read_rows(source, batch_rows):
        done = []
        for row in rows:
            index += 1
            line = row.pop("_line", None)
            where = f"{source}:{line}" if line is not None else f"{source}: row {index}"
            done.append(rerank_row(reranker, row, where))
        yield done


def _pyarrow_parquet() -> Any:
    try:
        from pyarrow import parquet
    except ImportError as exc:
        raise ImportError("Parquet files need pyarrow: pip install pyarrow (it comes with rag-rerank[ray])") from exc
    return parquet
