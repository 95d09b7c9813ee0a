"""Fine-tuning a cross-encoder on labelled (query, passage) pairs with hard negatives.

Training uses sentence-transformers' own ``CrossEncoderTrainer`` with a binary
cross-entropy loss: judged-relevant pairs (gain > 0) are 1, mined negatives 0. (Soft labels
of gain / max gain were tried first: most Cranfield positives then sit at 0.25-0.5, close
to the negatives, and the model collapsed to a constant score.)
Negatives are mined from the first stage: highly ranked documents that the judgements do
not call relevant, which is what the reranker must learn to push down.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag_rerank.data import Dataset
from rag_rerank.evaluation import document_search
from rag_rerank.models import DEFAULT_BI_ENCODER, resolve_model
from rag_rerank.store import ChromaStore


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    label: float


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


def mine_pairs(
    dataset: Dataset,
    store: ChromaStore,
    query_ids: Sequence[str],
    *,
    negatives_per_query: int = 4,
    random_negatives: int = 4,
    skip_top: int = 10,
    depth: int = 40,
    seed: int = 0,
) -> list[Pair]:
    """Positives (label 1) from the judgements; negatives (label 0) of two kinds.

    Hard negatives come from the bi-encoder's ranks ``skip_top``..``depth`` that are not
    judged relevant: the very top is skipped because judgements are incomplete and the
    unjudged documents there are often relevant (false negatives). Random negatives from the
    whole corpus (seeded) keep the model from learning "close to the query = negative".
    """
    texts = {doc.id: doc.text for doc in dataset.corpus}
    ids = sorted(doc_id for doc_id, text in texts.items() if text.strip())
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for query_id in query_ids:
        query, gains = dataset.queries[query_id], dataset.qrels.get(query_id, {})
        for doc_id, gain in sorted(gains.items()):
            if gain > 0 and texts.get(doc_id, "").strip():
                pairs.append(Pair(query, texts[doc_id], 1.0))
        ranked = document_search(store, query, depth)[skip_top:]
        hard = [doc.id for doc in ranked if gains.get(doc.id, 0) <= 0][:negatives_per_query]
        pool = [doc_id for doc_id in ids if gains.get(doc_id, 0) <= 0 and doc_id not in hard]
        for doc_id in hard + rng.sample(pool, min(random_negatives, len(pool))):
            pairs.append(Pair(query, texts[doc_id], 0.0))
    return pairs


def title_pairs(dataset: Dataset, store: ChromaStore, *, seed: int = 0) -> list[Pair]:
    """Weak supervision from the corpus itself: each document's title as a query, its text
    without the title as the positive, plus one hard negative (the bi-encoder's best other
    document for that title) and one random negative. Uses no query or judgement, so it
    adds data without touching the held-out queries."""
    rng = random.Random(seed)
    docs = [doc for doc in dataset.corpus if doc.metadata.get("title") and doc.text.strip()]
    pairs: list[Pair] = []
    for doc in docs:
        title = doc.metadata["title"]
        body = doc.text[len(title) :].strip() if doc.text.startswith(title) else doc.text
        if len(body) < 50:
            continue
        hard = next((hit for hit in document_search(store, title, 5) if hit.id != doc.id), None)
        negative = rng.choice(docs)
        pairs.append(Pair(title, body, 1.0))
        if hard is not None:
            pairs.append(Pair(title, hard.text, 0.0))
        if negative.id != doc.id:
            pairs.append(Pair(title, negative.text, 0.0))
    return pairs


def train_cross_encoder(
    pairs: Sequence[Pair],
    output_dir: str | Path,
    *,
    base_model: str = DEFAULT_BI_ENCODER,
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    max_length: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Fine-tune ``base_model`` (a fresh one-logit head if it has none) and save it to ``output_dir``.

    Checkpoints go to ``output_dir/checkpoints`` once per epoch; the final model is saved in
    ``output_dir`` itself and loads with ``CrossEncoderReranker(output_dir)``.
    """
    if not pairs:
        raise ValueError("no training pairs: check that the queries have judgements")
    import datasets
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed

    set_seed(seed)
    output_dir = Path(output_dir)
    model = CrossEncoder(resolve_model(base_model), num_labels=1, max_length=max_length)
    train = datasets.Dataset.from_dict(
        {"query": [p.query for p in pairs], "passage": [p.passage for p in pairs], "label": [p.label for p in pairs]}
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=max(1, int(0.1 * epochs * len(pairs) / batch_size)),
        seed=seed,
        data_seed=seed,
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=max(1, len(pairs) // batch_size // 5),
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=BinaryCrossEntropyLoss(model))
    started = time.perf_counter()
    trainer.train()
    model.save(str(output_dir))
    (output_dir / "training.txt").write_text(
        f"base_model: {base_model}\npairs: {len(pairs)}\nepochs: {epochs}\nbatch_size: {batch_size}\n"
        f"learning_rate: {learning_rate}\nmax_length: {max_length}\nseed: {seed}\n"
        f"seconds: {time.perf_counter() - started:.0f}\n"
    )
    return output_dir
