"""What a trained reranker may have memorised, and what memorisation alone buys.

A reranker trained on judged queries can gain on test queries by learning which documents tend
to be relevant at all, not what a query asks: test splits often share relevant documents with
their training splits (query logs repeat their popular answers too). So an evaluation of a
trained model reports the test queries none of whose relevant documents were relevant in
training (``Overlap.unseen``), and a baseline that is nothing but that memory (``DocumentPrior``:
the first stage plus a bonus for every document relevant in training, the bonus picked on the
training queries), against which a trained model's gain is read.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_rerank.document import Document, as_documents
from rag_rerank.evaluation.metrics import ndcg

# The bonuses tried, in first-stage score units (hybrid's weighted scores lie in 0..1).
BONUSES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# From this share of a test split's relevant documents relevant in training, the report warns.
WARN_SHARE = 0.1


@dataclass(frozen=True)
class TrainingData:
    """The judged queries a model learned from, in one collection (train and dev queries alike:
    dev queries chose the epoch)."""

    collection: str
    qrels: dict[str, dict[str, int]]  # query id -> document id -> gain
    queries: dict[str, str] = field(default_factory=dict)  # their texts, where known (for ``DocumentPrior``)

    @property
    def relevant(self) -> set[str]:
        """Every document judged relevant to some training query."""
        return {doc for gains in self.qrels.values() for doc, gain in gains.items() if gain > 0}


def read_trained_on(model: str | Path) -> dict[str, TrainingData]:
    """What ``rag-rerank train`` recorded beside a model (``trained_on.json``), by collection; empty
    for a model without the record (any model not trained here)."""
    from rag_rerank.training import TRAINED_ON_FILE

    path = Path(model) / TRAINED_ON_FILE
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {
        collection: TrainingData(
            collection,
            {query: dict.fromkeys(docs, 1) for role in roles.values() for query, docs in role.items()},
        )
        for collection, roles in record.items()
    }


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Judgements from a BEIR qrels file (``query-id corpus-id score``, tab-separated, with a header)
    or a TREC one (``query-id iteration doc-id relevance``, whitespace-separated).

    Raises:
        ValueError: a line that is neither, named with its number.
    """
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            fields = row if len(row) >= 3 else (row[0].split() if row else [])
            if not fields or (number == 1 and not fields[-1].lstrip("-").isdigit()):
                continue  # a blank line, or the header
            if len(fields) not in (3, 4) or not fields[-1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{number}: expected 'query doc gain' or 'query 0 doc gain', got {row!r}")
            qrels.setdefault(fields[0], {})[fields[-2]] = int(fields[-1])
    return qrels


@dataclass(frozen=True)
class Overlap:
    """How much a test split's relevant documents overlap the training data."""

    test_relevant: int  # distinct documents judged relevant in the test split
    shared: int  # of those, relevant in training too
    queries: int  # test queries with a relevant document
    touched: int  # of those, with a relevant document that was relevant in training
    unseen: list[str]  # the other test queries: none of their relevant documents was relevant in training

    def warning(self, collection: str) -> str | None:
        """What to say when the overlap is large enough to mislead (``WARN_SHARE``), else None."""
        if not self.test_relevant or self.shared / self.test_relevant < WARN_SHARE:
            return None
        return (
            f"{collection}: the test split shares {self.shared} of its {self.test_relevant} relevant documents "
            f"with the training data ({self.touched} of {self.queries} test queries have one): a model trained "
            "there can gain by memorising which documents are relevant. Read the "
            f"{len(self.unseen)} queries whose relevant documents it never saw, and the document-prior row "
            "where it is shown."
        )


def overlap(test_qrels: Mapping[str, Mapping[str, int]], training: TrainingData) -> Overlap:
    """The overlap of ``test_qrels``' relevant documents with ``training``'s."""
    seen = training.relevant
    relevant = {q: {doc for doc, gain in gains.items() if gain > 0} for q, gains in test_qrels.items()}
    judged = [q for q, docs in relevant.items() if docs]
    test_docs = set().union(*relevant.values()) if relevant else set()
    unseen = [q for q in judged if not relevant[q] & seen]
    return Overlap(len(test_docs), len(test_docs & seen), len(judged), len(judged) - len(unseen), unseen)


class DocumentPrior:
    """A reranker that reads nothing: the first stage's score plus ``bonus`` for every document that
    was relevant in training. What memorising which documents are relevant buys on its own."""

    def __init__(self, relevant: set[str], bonus: float):
        self.relevant, self.bonus = relevant, bonus

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """Every document, by first-stage score plus the bonus where it was relevant in training
        (ties keep the first stage's order)."""
        docs = as_documents(documents)
        scored = [(float(doc.score or 0.0) + self.bonus * (doc.id in self.relevant), doc) for doc in docs]
        order = sorted(range(len(docs)), key=lambda i: -scored[i][0])
        return [scored[i][1].with_score(scored[i][0], scored[i][1].score_kind) for i in order]


def pick_bonus(
    training: TrainingData, first_stage: Callable[[str], list[Document]]
) -> tuple[float, dict[float, float]]:
    """The bonus with the best mean nDCG@10 on the training queries, each query's prior made from
    the *other* training queries only (leave one query out: as a test query meets it).

    Args:
        training: The training queries, with their texts.
        first_stage: The first stage the prior is added to (query text -> documents, best first).

    Returns:
        The bonus (the smallest of the best), and every bonus's mean nDCG@10.

    Raises:
        ValueError: no training query has a text.
    """
    queries = [q for q in training.queries if any(g > 0 for g in training.qrels.get(q, {}).values())]
    if not queries:
        raise ValueError(f"{training.collection}: no training query text to choose the document prior's bonus on")
    counts = Counter(doc for q in training.qrels for doc, gain in training.qrels[q].items() if gain > 0)
    found = {q: first_stage(training.queries[q]) for q in queries}
    # each query's prior: the documents relevant to some *other* training query
    others = {q: {doc for doc, n in counts.items() if n - (training.qrels[q].get(doc, 0) > 0) > 0} for q in queries}
    means = {}
    for bonus in BONUSES:
        total = 0.0
        for q in queries:
            ranked = DocumentPrior(others[q], bonus).rerank(training.queries[q], found[q])
            total += ndcg([str(doc.id) for doc in ranked], training.qrels[q])
        means[bonus] = total / len(queries)
    best = max(means.values())
    return min(bonus for bonus, mean in means.items() if mean >= best - 1e-12), means
