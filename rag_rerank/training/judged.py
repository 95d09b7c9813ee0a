"""Training a cross-encoder that corrects the first stage, on judged queries.

A cross-encoder started from the bi-encoder's weights learns joint relevance too slowly for
the few thousand judged pairs there are (trained alone with BCE it lowered nDCG@10 on
Cranfield from 0.367 to 0.225). So the reranker is trained to *correct* the first stage:
its score is

    cross-encoder logit + first_stage_weight * -log(first-stage rank)

and a listwise loss (softmax cross-entropy over one relevant and several non-relevant
candidates of the same query) sees that sum. The head starts near 0, so training starts
from the first stage's own order and only has to learn where the first stage is wrong; the
weight is learned too and saved beside the model (``rag_rerank.json``), so
``CrossEncoderReranker`` applies the same fusion at query time.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any  # Any: a sentence-transformers CrossEncoder (its .model is Optional)

from rag_rerank.data import Dataset
from rag_rerank.document import ids_of
from rag_rerank.evaluation.metrics import ndcg
from rag_rerank.models import DEFAULT_BI_ENCODER, resolve_model
from rag_rerank.rerank.cross_encoder import FIRST_STAGE_FILE, first_stage_prior
from rag_rerank.retrieval.store import ChromaStore

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Candidates:
    """One training query: its first-stage candidates, best first, and which are relevant; with
    where it came from (collection, query id, every document judged relevant to it), which the
    model folder records (``TRAINED_ON_FILE``) so that an evaluation can tell memorisation apart."""

    query: str
    passages: tuple[str, ...]
    relevant: tuple[int, ...]
    collection: str = ""
    query_id: str = ""
    relevant_ids: tuple[str, ...] = ()


# What a trained model learned from, beside its weights: collection -> role ("train", "dev") ->
# query id -> the ids of every document judged relevant to it.
TRAINED_ON_FILE = "trained_on.json"


def mine_candidates(
    dataset: Dataset, store: ChromaStore, query_ids: Sequence[str], depth: int = 30
) -> list[Candidates]:
    """Each query's hybrid top ``depth`` (the passages a reranker will see), with the judged
    relevant ones marked. Queries with no relevant document there are left out: there is
    nothing in their list to move up."""
    found = []
    for query_id in query_ids:
        query, gains = dataset.queries[query_id], dataset.qrels.get(query_id, {})
        docs = store.retrieve(query, depth)
        relevant = tuple(i for i, doc_id in enumerate(ids_of(docs)) if gains.get(doc_id, 0) > 0)
        if relevant:
            judged = tuple(sorted(doc_id for doc_id, gain in gains.items() if gain > 0))
            found.append(Candidates(query, tuple(doc.text for doc in docs), relevant, dataset.name, query_id, judged))
    return found


@dataclass
class _Fit:
    """What one training run updates: the model, the learned first-stage weight, the optimiser."""

    model: Any
    weight: torch.nn.Parameter
    optimizer: torch.optim.Optimizer
    schedule: Any
    max_length: int
    group_size: int
    bf16: bool
    rng: random.Random

    def step(self, groups: list[Candidates]) -> None:
        import torch

        losses = [
            _group_loss(self.model, self.max_length, self.weight, item, self.group_size, self.rng, self.bf16)
            for item in groups
        ]
        torch.stack(losses).mean().backward()
        torch.nn.utils.clip_grad_norm_(self.model.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()

    def dev_ndcg(self, dev: Sequence[Candidates]) -> float | None:
        return _dev_ndcg(self.model, self.max_length, self.weight.item(), dev)


def train_reranker(
    train: Sequence[Candidates],
    output_dir: str | Path,
    *,
    dev: Sequence[Candidates] = (),
    base_model: str = DEFAULT_BI_ENCODER,
    epochs: int = 3,
    group_size: int = 8,
    groups_per_step: int = 4,
    learning_rate: float = 3e-5,
    max_length: int = 320,
    seed: int = 0,
    fp16: bool = False,
    bf16: bool | None = None,
    show_progress: bool = True,
) -> Path:
    """Fine-tune a cross-encoder, listwise, as a correction of the first stage; save it.

    Each group is one query's relevant passage and ``group_size - 1`` of its non-relevant
    candidates, each with its first-stage rank; the loss is the cross-entropy of the softmax
    over (logit + weight * prior(rank)), with the weight learned too.

    Args:
        train: The training queries (``mine_candidates``).
        output_dir: Where the model, its recipe (``rag_rerank.json``) and what it learned from
            (``trained_on.json``) are saved.
        dev: Queries that choose the epoch: the one with the best dev nDCG@10 is kept (the first
            stage's own order counts as epoch 0).
        base_model: The model to start from (a fresh one-logit head is added).
        epochs, group_size, groups_per_step, learning_rate, max_length, seed: The recipe.
        fp16: Save the weights in float16 (half the size; they load as float32 on CPU).
        bf16: Train under bfloat16 autocast (``None``: where this CPU multiplies bfloat16 faster
            than float32).
        show_progress: Progress bars and a line per epoch.

    Returns:
        ``output_dir``.

    Raises:
        ValueError: no training query, or fewer than one epoch.
    """
    from transformers import set_seed

    if not train:
        raise ValueError("no training queries: none has a relevant document among its candidates")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    set_seed(seed)
    steps = epochs * -(-len(train) // groups_per_step)
    fit = _start(base_model, max_length, group_size, learning_rate, steps, seed, bf16)
    started = time.perf_counter()
    history, best = _epochs(fit, train, dev, epochs, groups_per_step, show_progress)
    fit.model.model.load_state_dict(best[1])
    recipe = {
        "first_stage_weight": best[2],
        "first_stage_prior": "-log(rank), rank = 1 for the first candidate",
        "history": history,
        "train_queries": len(train),
        "dev_queries": len(dev),
        "epochs": epochs,
        "group_size": group_size,
        "groups_per_step": groups_per_step,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "seed": seed,
        "bf16_autocast": fit.bf16,
        "base_model": base_model,
        "seconds": round(time.perf_counter() - started),
    }
    path = _save(fit.model, Path(output_dir), recipe, fp16)
    (path / TRAINED_ON_FILE).write_text(json.dumps(trained_on(train, dev), indent=1, sort_keys=True) + "\n")
    return path


def trained_on(train: Sequence[Candidates], dev: Sequence[Candidates]) -> dict[str, dict[str, dict[str, list[str]]]]:
    """collection -> role ("train", "dev") -> query id -> the documents judged relevant to it."""
    record: dict[str, dict[str, dict[str, list[str]]]] = {}
    for role, items in (("train", train), ("dev", dev)):
        for item in items:
            record.setdefault(item.collection, {}).setdefault(role, {})[item.query_id] = list(item.relevant_ids)
    return record


def _start(
    base_model: str, max_length: int, group_size: int, learning_rate: float, steps: int, seed: int, bf16: bool | None
) -> _Fit:
    """The model with a fresh head near 0, the first-stage weight at 1, and their optimiser."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import get_linear_schedule_with_warmup

    model = CrossEncoder(resolve_model(base_model), num_labels=1, max_length=max_length, device="cpu")
    _shrink_head(model.model)
    if bf16 is None:
        from rag_rerank.inference.cpu import matmul_speedup

        bf16 = matmul_speedup("bfloat16") > 1.2
    weight = torch.nn.Parameter(torch.tensor(1.0))  # the first stage's weight, learned at its own pace
    optimizer = torch.optim.AdamW(
        [{"params": model.model.parameters()}, {"params": [weight], "lr": 0.01, "weight_decay": 0.0}],
        lr=learning_rate,
        weight_decay=0.01,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    return _Fit(model, weight, optimizer, schedule, max_length, group_size, bf16, random.Random(seed))


def _epochs(
    fit: _Fit,
    train: Sequence[Candidates],
    dev: Sequence[Candidates],
    epochs: int,
    groups_per_step: int,
    show_progress: bool,
) -> tuple[list[dict], tuple[float | None, dict, float]]:
    """Every epoch, its dev nDCG@10 in the history, and the best one: (dev nDCG, weights, first-stage weight)."""
    baseline = fit.dev_ndcg(dev)
    history: list[dict] = [{"epoch": 0, "dev_ndcg@10": baseline, "first_stage_weight": 1.0}]
    best: tuple[float | None, dict, float] | None = None
    for epoch in range(1, epochs + 1):
        order = list(train)
        fit.rng.shuffle(order)
        for groups in _steps(order, groups_per_step, f"epoch {epoch}", show_progress):
            fit.step(groups)
        score = fit.dev_ndcg(dev)
        history.append({"epoch": epoch, "dev_ndcg@10": score, "first_stage_weight": fit.weight.item()})
        if show_progress:
            print(
                f"epoch {epoch}: dev nDCG@10 {score} (first stage {baseline}), first-stage weight {fit.weight.item():.3f}"
            )
        if best is None or score is None or best[0] is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in fit.model.model.state_dict().items()}, fit.weight.item())
    assert best is not None  # epochs >= 1 was checked
    if baseline is not None and best[0] is not None and best[0] <= baseline:
        warnings.warn(
            f"no epoch beat the first stage on the {len(dev)} dev queries (dev nDCG@10 by epoch: "
            f"{[h['dev_ndcg@10'] for h in history]}): this model will not improve rankings. "
            "Try more data, more epochs or another learning rate.",
            stacklevel=3,
        )
    return history, best


def _logits(model: Any, max_length: int, query: str, passages: Sequence[str]) -> torch.Tensor:
    batch = model.tokenizer(
        [query] * len(passages),
        list(passages),
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    return model.model(**batch).logits[:, 0]


def _group_loss(
    model: Any,
    max_length: int,
    weight: torch.Tensor,
    item: Candidates,
    group_size: int,
    rng: random.Random,
    bf16: bool,
) -> torch.Tensor:
    """Softmax cross-entropy of one group, the relevant passage first, scored as logit + weight * prior."""
    import torch

    positions = _group(item, group_size, rng)
    prior = torch.from_numpy(first_stage_prior(len(item.passages))[positions])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = _logits(model, max_length, item.query, [item.passages[i] for i in positions])
    scores = logits.float() + weight * prior
    return torch.nn.functional.cross_entropy(scores[None], torch.zeros(1, dtype=torch.long))


def _dev_ndcg(model: Any, max_length: int, weight: float, dev: Sequence[Candidates]) -> float | None:
    """Mean nDCG@10 of the dev queries reranked by logit + weight * prior (None without dev queries)."""
    import numpy as np
    import torch

    if not dev:
        return None
    model.model.eval()
    total = 0.0
    with torch.inference_mode():
        for item in dev:
            scores = _logits(model, max_length, item.query, item.passages).numpy()
            scores = scores + weight * first_stage_prior(len(item.passages))
            order = [str(i) for i in np.argsort(-scores, kind="stable")]
            total += ndcg(order, {str(i): 1 for i in item.relevant})
    model.model.train()
    return total / len(dev)


def _steps(items: list[Candidates], size: int, label: str, show_progress: bool) -> Iterator[list[Candidates]]:
    """``items`` in optimiser steps of ``size`` groups, with a progress bar."""
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(items), size), desc=label, disable=not show_progress):
        yield items[start : start + size]


def _save(model: Any, output_dir: Path, recipe: dict, fp16: bool) -> Path:
    """The model (float16 weights with ``fp16``, but a config that says float32: on a CPU
    sentence-transformers >= 6, LangChain and LlamaIndex would otherwise run float16, 3x slower)
    and its recipe with the learned first-stage weight (``rag_rerank.json``)."""
    if fp16:
        model.model.half()
    model.save(str(output_dir))
    if fp16:
        config_file = output_dir / "config.json"
        config = json.loads(config_file.read_text())
        config.update({key: "float32" for key in ("dtype", "torch_dtype") if key in config})
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    (output_dir / FIRST_STAGE_FILE).write_text(json.dumps(recipe, indent=2))
    return output_dir


def _group(item: Candidates, size: int, rng: random.Random) -> list[int]:
    """One relevant position first, then up to ``size - 1`` non-relevant ones."""
    negatives = [i for i in range(len(item.passages)) if i not in item.relevant]
    return [rng.choice(item.relevant), *rng.sample(negatives, min(size - 1, len(negatives)))]


def _shrink_head(network: torch.nn.Module) -> None:
    """Scale the fresh classification head down so the model starts as a near-zero correction."""
    import torch

    head = getattr(network, "classifier", None)
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            head.weight.mul_(0.1)
            head.bias.zero_()
