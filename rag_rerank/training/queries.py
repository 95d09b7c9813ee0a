"""The queries a teacher labels: a collection's training queries, or queries the local LLM writes for
documents of a corpus that has none, written down (JSON lines) with the corpus and document they came from."""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rag_rerank.data import Dataset
from rag_rerank.rerank.llm.protocol import LLM
from rag_rerank.rerank.llm.query_likelihood import QUERY_LIKELIHOOD_PROMPT

QUERY_TOKENS = 40  # the longest query a local LLM writes, in its tokens


@dataclass(frozen=True)
class TrainingQuery:
    """One query to label: the corpus it searches, its id there, its text, and the document an LLM wrote
    it for (None for a collection's own query)."""

    corpus: str
    query_id: str
    text: str
    written_for: str | None = None


def collection_queries(dataset: Dataset) -> list[TrainingQuery]:
    """The dataset's queries (load it with its training split), as training queries; no judgement is read."""
    return [TrainingQuery(dataset.name, query_id, text) for query_id, text in dataset.queries.items()]


def generate_queries(
    llm: LLM,
    dataset: Dataset,
    count: int,
    *,
    seed: int = 0,
    skip: Collection[str] = (),
    max_passage_chars: int = 1500,
    show_progress: bool = True,
) -> Iterator[TrainingQuery]:
    """A query the LLM writes for each of ``count`` documents drawn (seeded) from ``dataset``'s corpus, with
    the query-likelihood prompt (Zhuang et al. 2023) read forwards: the LLM continues it with a question.

    Args:
        llm: Any ``LLM`` (``TransformersLM("gemma-3-270m")`` offline, or a server).
        dataset: The corpus (its queries are not read).
        count: How many documents to write a query for (at most the corpus size).
        seed: Which documents.
        skip: Ids of documents drawn that already have a query (a run again writes only the rest).
        max_passage_chars: Each document is cut to this many characters in the prompt.
        show_progress: A progress bar.

    Yields:
        One ``TrainingQuery`` per document whose answer held a question (an empty answer is skipped).

    Raises:
        ValueError: the corpus is empty, or ``count`` is not positive.
    """
    from tqdm.auto import tqdm

    if not dataset.corpus:
        raise ValueError(f"the corpus {dataset.name!r} is empty: there is no document to write queries for")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    docs = random.Random(seed).sample(dataset.corpus, min(count, len(dataset.corpus)))
    docs = [doc for doc in docs if doc.id not in skip]
    for doc in tqdm(docs, desc=f"writing queries for {dataset.name}", disable=not show_progress):
        prompt = QUERY_LIKELIHOOD_PROMPT.format(passage=" ".join(doc.text[:max_passage_chars].split()))
        question = first_question(llm.complete(prompt))
        if question:
            yield TrainingQuery(dataset.name, f"generated-{doc.id}", question, written_for=doc.id)


def first_question(answer: str) -> str:
    """The first line of an LLM's answer, up to and including its first question mark."""
    line = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    mark = line.find("?")
    return line[: mark + 1] if mark >= 0 else line


def write_queries(path: str | Path, queries: Sequence[TrainingQuery]) -> Path:
    """Append ``queries`` to a JSON-lines file, one object (``corpus``, ``query_id``, ``text``,
    ``written_for``) a line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(asdict(query)) + "\n")
    return path


def read_queries(path: str | Path, corpora: Mapping[str, Dataset]) -> list[TrainingQuery]:
    """The queries of a JSON-lines file (``write_queries``'), each checked against the corpus it names.

    Args:
        path: The file.
        corpora: The corpora by name (``Dataset.name``).

    Raises:
        ValueError: a line that is no query, a corpus not given, or a document not in its corpus: each
            named with its line number, before anything is labelled.
    """
    known = {name: {doc.id for doc in data.corpus} for name, data in corpora.items()}
    queries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            query = TrainingQuery(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{where}: not a query ({error}); each line holds corpus, query_id, text") from None
        if query.corpus not in known:
            raise ValueError(f"{where}: corpus {query.corpus!r} was not given (given: {', '.join(known) or 'none'})")
        if query.written_for is not None and query.written_for not in known[query.corpus]:
            raise ValueError(f"{where}: document {query.written_for!r} is not in the corpus {query.corpus!r}")
        if not isinstance(query.text, str) or not query.text.strip():
            raise ValueError(f"{where}: the query text is empty")
        queries.append(query)
    return queries
