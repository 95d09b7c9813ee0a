"""Loaders for corpora and IR test collections (documents, queries, relevance judgements)."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_rerank.document import Document

# Cranfield grades run 1 (complete answer) .. 4 (minimal interest), -1 (not relevant).
# As nDCG gains: 1->4, 2->3, 3->2, 4->1, -1->0 (higher gain = more relevant).
CRANFIELD_GAINS = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}


@dataclass
class Dataset:
    """A test collection: ``qrels[query_id][doc_id]`` is the gain (0 = judged not relevant)."""

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def subset(self, query_ids: list[str]) -> Dataset:
        """The same corpus with only ``query_ids`` (for train/test splits)."""
        missing = [q for q in query_ids if q not in self.queries]
        if missing:
            raise KeyError(f"query ids not in {self.name}: {missing[:5]}")
        return Dataset(
            self.name,
            self.corpus,
            {q: self.queries[q] for q in query_ids},
            {q: self.qrels.get(q, {}) for q in query_ids},
        )


def natural_key(key: str) -> tuple:
    """Sort key that puts numeric ids in number order ("2" before "10"), then the others."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def split_queries(dataset: Dataset, test_fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed train/test split of the queries that have at least one relevant document.

    The judged query ids, in natural order, are shuffled with ``random.Random(seed)``;
    the first ``round(n * test_fraction)`` are the test queries. Same inputs, same split.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    judged = [q for q in dataset.queries if any(g > 0 for g in dataset.qrels.get(q, {}).values())]
    ids = sorted(judged, key=lambda q: (len(q), q))
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    by_order = lambda q: (len(q), q)
    return sorted(ids[n_test:], key=by_order), sorted(ids[:n_test], key=by_order)


def load_collection(folder: str | Path, queries: str = "test", test_fraction: float = 0.5, seed: int = 0) -> Dataset:
    """A test collection with the queries of one split: ``"test"``, ``"train"`` or ``"all"``.

    A BEIR folder's qrels files are its splits (SciFact: ``qrels/train.tsv`` and
    ``qrels/test.tsv``; a folder with only ``test.tsv`` is a test set). Cranfield has one
    judged set, so ``split_queries`` cuts it in half (fixed, seeded) for train and test.
    """
    folder = Path(folder)
    if queries not in {"test", "train", "all"}:
        raise ValueError(f"queries must be 'test', 'train' or 'all'; got {queries!r}")
    if not (folder / "cran.all.1400").exists():
        splits = sorted(path.stem for path in (folder / "qrels").glob("*.tsv"))
        if queries == "all" and len(splits) > 1:
            parts = [load_beir(folder, split) for split in splits]
            merged = {q: text for part in parts for q, text in part.queries.items()}
            qrels = {q: gains for part in parts for q, gains in part.qrels.items()}
            return Dataset(parts[0].name, parts[0].corpus, merged, qrels)
        split = "test" if queries == "all" else queries
        if split not in splits and splits:
            raise ValueError(f"{folder} has no {split!r} split (qrels/{split}.tsv); its splits: {', '.join(splits)}")
        return load_beir(folder, split)
    data = load_cranfield(folder)
    if queries == "all":
        return data
    train_ids, test_ids = split_queries(data, test_fraction, seed)
    return data.subset(train_ids if queries == "train" else test_ids)


def load_cranfield(folder: str | Path) -> Dataset:
    """The Cranfield collection from ``cran.all.1400``, ``cran.qry`` and ``cranqrel``.

    Queries are renumbered 1..225 by their position in ``cran.qry``, since that is how
    ``cranqrel`` numbers them (the ``.I`` ids in the file are not). Grades become gains
    by ``CRANFIELD_GAINS``. A document's text is its abstract, with the title put in
    front when the abstract does not already start with it.
    """
    folder = Path(folder)
    for name in ("cran.all.1400", "cran.qry", "cranqrel"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} not found: is {folder} the Cranfield folder?")
    corpus = []
    for record in _smart_records((folder / "cran.all.1400").read_text(encoding="utf-8", errors="replace")):
        title, text = _squash(record.get("T", "")), _squash(record.get("W", ""))
        if title and not text.startswith(title):
            text = f"{title}\n{text}".strip()
        corpus.append(
            Document(
                text=text or title,
                id=record["I"],
                metadata={"title": title, "author": _squash(record.get("A", "")), "source": "cranfield"},
            )
        )
    queries = {
        str(position): _squash(record.get("W", ""))
        for position, record in enumerate(_smart_records((folder / "cran.qry").read_text(encoding="utf-8")), start=1)
    }
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        query_id, doc_id, grade = parts[0], parts[1], int(parts[2])
        if grade not in CRANFIELD_GAINS:
            raise ValueError(f"cranqrel: unknown grade {grade} in line {line!r}")
        qrels.setdefault(query_id, {})[doc_id] = CRANFIELD_GAINS[grade]
    return Dataset("cranfield", corpus, queries, qrels)


def _smart_records(text: str) -> list[dict[str, str]]:
    """Parse SMART format: ``.I id`` starts a record, ``.X`` lines start fields."""
    records: list[dict[str, str]] = []
    current_field = None
    for line in text.splitlines():
        match = re.match(r"^\.([A-Z])\s*(.*)$", line)
        if match and match.group(1) == "I":
            records.append({"I": str(int(match.group(2).strip()))})
            current_field = None
        elif match:
            current_field = match.group(1)
            records[-1][current_field] = match.group(2)
        elif current_field and records:
            records[-1][current_field] += "\n" + line
    return records


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def load_beir(folder: str | Path, split: str = "test") -> Dataset:
    """A BEIR-format dataset: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

    Only queries that have judgements in the split are kept.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {folder} a BEIR dataset folder?")
    corpus = []
    for line_no, row in _jsonl(folder / "corpus.jsonl"):
        corpus.append(_titled(str(row["_id"]), row.get("title"), row.get("text"), {}))
    queries = {str(row["_id"]): row["text"] for _, row in _jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {q: text for q, text in queries.items() if q in qrels}
    return Dataset(folder.name, corpus, queries, qrels)


def _titled(doc_id: str, title: str | None, text: str | None, metadata: dict) -> Document:
    """A JSONL row as a document: the title (if any) in front of the text and in the metadata."""
    title = title or ""
    return Document(
        text=f"{title}\n{text or ''}".strip(), id=doc_id, metadata={**metadata, **({"title": title} if title else {})}
    )


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({error.msg})") from error


def load_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Documents from files: each ``.txt``/``.md`` file is one document (id = its path),
    each line of a ``.jsonl`` file is one (``{"id"|"_id", "text", "title"?, "metadata"?}``),
    and a Cranfield folder gives its 1,400 abstracts."""
    documents: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / "cran.all.1400").exists():
            documents.extend(load_cranfield(path).corpus)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".md", ".jsonl"})
            documents.extend(load_documents(files))
        elif path.suffix == ".jsonl":
            for line_no, row in _jsonl(path):
                doc_id = row.get("id", row.get("_id"))
                if doc_id is None or "text" not in row:
                    raise ValueError(f"{path}:{line_no}: each line needs an 'id' (or '_id') and a 'text'")
                documents.append(_titled(str(doc_id), row.get("title"), row["text"], row.get("metadata") or {}))
        elif path.is_file():
            documents.append(
                Document(text=path.read_text(encoding="utf-8"), id=str(path), metadata={"path": str(path)})
            )
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return documents
