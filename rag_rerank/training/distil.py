"""Distillation: a fast student trained on a slow teacher's scores, never on human judgements.

The teacher's own scores of each query's candidates (``teacher.label``; never fused with the first stage)
are standardised per query (so any teacher's scale will do); the student learns them on
sentence-transformers' trainer with its listwise loss (``kl``: ListNet for the cross-encoder, the
distillation KL divergence for the bi-encoder: the teacher's softmax over a query's candidates against
the student's) or margin-MSE (``margin-mse``: the teacher's score differences). A tenth of the queries
is held out: the student's agreement with the teacher there (mean Kendall tau, an evaluator the trainer
runs each epoch) chooses the epoch that is kept, the base model's own agreement counting as epoch 0; the
first stage's own agreement with the teacher is the bar it is printed beside.

A cross-encoder student is then fused with the first stage where it runs, as the query-likelihood LLM is
(``retrieval.fusion.with_first_stage``): its share is chosen on the held-out training queries that have
judgements (a collection's own, or the document an LLM wrote the query for), with the kept network, and
saved with it (``rag_rerank.json``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from rag_rerank.training.students import STUDENTS, Student
from rag_rerank.training.teacher import Labelled, check_finite

Loss = Literal["kl", "margin-mse"]
# What a distilled student keeps beside its weights: its teacher, recipe and agreement by epoch.
DISTILLED_FILE = "distilled.json"
FUSION_GRID = [i / 20 for i in range(21)]  # the student's shares of the fused score tried
MIN_JUDGED = 10  # the fewest judged training queries a fusion weight is chosen on
# (corpus, query id) -> document id -> gain: the judgements a fusion weight is chosen on
Judgements = Mapping[tuple[str, str], Mapping[str, int]]


@dataclass(frozen=True)
class Recipe:
    """How a student is trained.

    Args:
        loss: ``"kl"`` (listwise, over each query's candidates) or ``"margin-mse"`` (their differences).
        epochs: Passes over the training queries; the epoch that agrees best on held-out queries is kept.
        queries_per_step: Queries per optimiser step.
        learning_rate: AdamW's, with 10% warm-up and linear decay.
        max_length: Tokens per (query, passage) pair (the bi-encoder: per text, at most its own limit).
        temperature: The teacher's softmax temperature over standardised scores (``kl``).
        dev_fraction: Share of the queries held out to measure agreement.
        seed: Which queries are held out, which candidates are drawn, the trainer's order and dropout.
        sample: Candidates of a query to learn from, drawn once (seeded; None: all); fewer cost less.
            The bi-encoder's losses take the same number for every query: without ``sample``, the
            fewest any query has.
    """

    loss: Loss = "kl"
    epochs: int = 2
    queries_per_step: int = 4
    learning_rate: float = 2e-5
    max_length: int = 320
    temperature: float = 1.0
    dev_fraction: float = 0.1
    seed: int = 0
    sample: int | None = None

    def check(self) -> None:
        if self.loss not in get_args(Loss):
            raise ValueError(f"loss must be one of {', '.join(get_args(Loss))}, got {self.loss!r}")
        if self.epochs < 1 or self.queries_per_step < 1:
            raise ValueError(
                f"epochs and queries_per_step must be at least 1, got {self.epochs}, {self.queries_per_step}"
            )
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be between 0 and 1, got {self.dev_fraction}")
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ValueError("temperature and learning_rate must be positive")
        if self.sample is not None and self.sample < 2:
            raise ValueError(f"sample must be at least 2 candidates (or None for all), got {self.sample}")


def distil(
    rows: Sequence[Labelled],
    output_dir: str | Path,
    *,
    student: str = "cross-encoder",
    base_model: str | None = None,
    recipe: Recipe = Recipe(),
    teacher: dict[str, Any] | None = None,
    judgements: Judgements | None = None,
    fp16: bool = False,
    device: str | None = None,
    bf16: bool | None = None,
    show_progress: bool = True,
) -> Path:
    """Train a student on the teacher's scores of ``rows``; save it in ``output_dir``.

    Everything is checked before training starts, and the folder appears only when the student is
    saved whole (it is written beside it first).

    Args:
        rows: The teacher's scores (``TeacherScores.rows`` or ``label``'s answer).
        output_dir: A folder that does not exist yet (or is empty).
        student: ``"cross-encoder"`` or ``"bi-encoder"``.
        base_model: The model the student starts from (default: the shipped cross-encoder, or the
            bi-encoder all-MiniLM-L6-v2).
        recipe: The loss and its settings.
        teacher: The teacher-scores header (teacher, provenance, command), kept in ``distilled.json``.
        judgements: Human judgements of the training queries, by (corpus, query id), for choosing a
            cross-encoder's fusion weight (a query an LLM wrote counts its document as relevant);
            without any, the query-likelihood reranker's weight is kept.
        fp16: Save a cross-encoder student's weights in float16 (they load as float32).
        device: ``"cuda"`` where there is one, else ``"cpu"`` (default).
        bf16: Train in bfloat16 mixed precision (None: on an accelerator, and on a CPU that multiplies
            bfloat16 at least 1.2x faster than float32); the weights stay float32.
        show_progress: Progress bars and a line per epoch.

    Returns:
        ``output_dir``, holding the student and ``distilled.json`` (teacher, recipe, agreement by epoch
        beside the first stage's own agreement, the fusion weight, time, and which queries it learned from).

    Raises:
        ValueError: no rows, a row with a non-finite or missing teacher score, fewer than two
            candidates everywhere, an unknown student or loss, an output folder that is not empty.
        TokenizerMismatch: the student's tokenizer does not fit its model.
    """
    output = Path(output_dir)
    recipe.check()
    train, dev = _split(_checked(rows), recipe)
    if student not in STUDENTS:
        raise ValueError(f"student must be one of {', '.join(STUDENTS)}, got {student!r}")
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} is not empty: give a new folder for the student")
    device = device or _default_device()
    base = base_model or _default_base(student)
    model = STUDENTS[student](base, recipe.max_length, device)
    bf16 = _bf16_pays(device) if bf16 is None else bf16
    started = time.perf_counter()
    before = {name: tensor.detach().clone() for name, tensor in model.model.state_dict().items()}
    history = fit(model, train, dev, recipe, bf16, show_progress)
    if max(history, key=lambda epoch: epoch["dev_kendall_tau"])["epoch"] == 0:
        model.model.load_state_dict(before)  # no epoch beat the base (as measured, fresh head and all): kept
    del before
    record = {
        "student": student,
        "base_model": model.base_model,
        "teacher": teacher or {},
        "recipe": asdict(recipe),
        "agreement": history,
        # the bar: the first stage's own order agrees this well with the teacher on the held-out queries
        "first_stage_kendall_tau": sum(kendall_tau(row.first_stage, row.teacher) for row in dev) / len(dev),
        "train_queries": [list(row.key) for row in train],
        "dev_queries": [list(row.key) for row in dev],
        "device": device,
        "bf16": bf16,
        "seconds": round(time.perf_counter() - started),
    }
    config: dict[str, Any] = {"distilled": True, "recipe": record["recipe"]}
    if student == "cross-encoder":
        weight, chosen_on = fusion_weight(model, train, dev, judgements or {})
        record["fusion"] = config["fusion"] = {"weight": weight, "chosen_on": chosen_on}
        config["fusion_weight"] = weight
    if show_progress:
        _print_outcome(record)
    return _save_whole(model, output, record, config, fp16)


def _print_outcome(record: dict[str, Any]) -> None:
    taus = [round(epoch["dev_kendall_tau"], 3) for epoch in record["agreement"]]
    fusion = record.get("fusion")
    print(
        f"Kendall tau with the teacher on {len(record['dev_queries'])} held-out queries by epoch {taus} "
        f"(the first stage's own: {record['first_stage_kendall_tau']:.3f})"
        + (f"; fused with the first stage at {fusion['weight']} ({fusion['chosen_on']})" if fusion else "")
    )


def _checked(rows: Sequence[Labelled]) -> list[Labelled]:
    """The rows with at least two candidates; every row's scores finite."""
    if not rows:
        raise ValueError("no teacher scores: label some queries first (rag-rerank distil --data ...)")
    for row in rows:
        check_finite(row)
    usable = [row for row in rows if len(row.passages) > 1]
    if not usable:
        raise ValueError("every labelled query has fewer than two candidates: there is no order to learn")
    return usable


def _split(rows: list[Labelled], recipe: Recipe) -> tuple[list[Labelled], list[Labelled]]:
    """(train, dev): ``dev_fraction`` of the queries (at least one), drawn with the seed."""
    if len(rows) < 2:
        raise ValueError("at least two labelled queries are needed: one to learn from and one to measure on")
    order = sorted(rows, key=lambda row: row.key)
    random.Random(recipe.seed).shuffle(order)
    n_dev = max(1, round(len(order) * recipe.dev_fraction))
    return order[n_dev:], order[:n_dev]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _bf16_pays(device: str) -> bool:
    if device != "cpu":
        return True
    from rag_rerank.inference.cpu import matmul_speedup

    return matmul_speedup("bfloat16") > 1.2


def _default_base(student: str) -> str:
    from rag_rerank.models import DEFAULT_BI_ENCODER, SHIPPED_CROSS_ENCODER

    return str(SHIPPED_CROSS_ENCODER) if student == "cross-encoder" else DEFAULT_BI_ENCODER


def fit(
    model: Student, train: list[Labelled], dev: list[Labelled], recipe: Recipe, bf16: bool, show_progress: bool
) -> list[dict[str, Any]]:
    """Train ``recipe.epochs`` epochs on the student's own trainer and loss; the agreement by epoch (0:
    before training; each epoch's measured in the training precision). The model ends with the best
    epoch's weights (the trainer's best checkpoint), scoring in float32."""
    from transformers import set_seed

    set_seed(recipe.seed)
    evaluator = _evaluator(model, dev)
    history = [{"epoch": 0, "dev_kendall_tau": agreement(model, dev)}]
    train = _same_size(model, train, recipe)
    targets = [_targets(row.teacher, recipe) for row in train]
    with tempfile.TemporaryDirectory(prefix="rag-rerank-distil-") as checkpoints:
        trainer = model.trainer(
            args=_arguments(checkpoints, model, recipe, bf16, show_progress),
            train_dataset=model.dataset(train, targets, recipe.loss),
            loss=model.loss(recipe.loss),
            evaluator=evaluator,
        )
        trainer.train()
    # mixed precision wraps the model's forward in autocast: unwrapped, it scores in float32 as saved
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    for logged in trainer.state.log_history:
        if f"eval_{AGREEMENT}" in logged:
            history.append({"epoch": round(logged["epoch"]), "dev_kendall_tau": logged[f"eval_{AGREEMENT}"]})
    return history


def _arguments(folder: str, model: Student, recipe: Recipe, bf16: bool, show_progress: bool) -> dict[str, Any]:
    """The trainer's settings: one evaluation and checkpoint per epoch, the best one loaded at the end."""
    return {
        "output_dir": folder,
        "num_train_epochs": recipe.epochs,
        "per_device_train_batch_size": recipe.queries_per_step,
        "learning_rate": recipe.learning_rate,
        "warmup_steps": 0.1,
        "weight_decay": 0.01,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_only_model": True,
        "save_total_limit": 1,  # the best checkpoint is kept beside it
        "load_best_model_at_end": True,
        "metric_for_best_model": f"eval_{AGREEMENT}",
        "greater_is_better": True,
        "seed": recipe.seed,
        "bf16": bf16,
        "use_cpu": model.device == "cpu",
        "report_to": "none",
        "disable_tqdm": not show_progress,
        "logging_strategy": "no",
    }


def _targets(teacher: Sequence[float], recipe: Recipe) -> list[float]:
    """What the loss is given for one query: the standardised teacher scores (over the temperature for ``kl``)."""
    divisor = recipe.temperature if recipe.loss == "kl" else 1.0
    return [t / divisor for t in standardised(teacher)]


def _same_size(model: Student, rows: list[Labelled], recipe: Recipe) -> list[Labelled]:
    """The rows the trainer sees: ``recipe.sample`` candidates of each (seeded, in first-stage order); as
    many for every row where the student's losses need it (the fewest any row has, without a sample)."""
    rng = random.Random(recipe.seed)
    size = recipe.sample
    if model.fixed_candidates or recipe.loss != "kl":
        size = min([len(row.passages) for row in rows] + ([size] if size else []))
    return [sampled(row, size, rng) for row in rows]


def sampled(row: Labelled, size: int | None, rng: random.Random) -> Labelled:
    """``row`` with ``size`` of its candidates drawn at random, in first-stage order, each keeping its
    first-stage rank (all of them for None)."""
    n = len(row.passages)
    if size is None or size >= n:
        return row
    keep = sorted(rng.sample(range(n), size))
    return dataclasses.replace(
        row,
        doc_ids=tuple(row.doc_ids[i] for i in keep),
        passages=tuple(row.passages[i] for i in keep),
        first_stage=tuple(row.first_stage[i] for i in keep),
        teacher=tuple(row.teacher[i] for i in keep),
        ranks=tuple(row.positions()[i] for i in keep),
    )


def standardised(scores: Sequence[float]) -> list[float]:
    """``scores`` less their mean, over their standard deviation (all 0 where they are equal)."""
    import numpy as np

    values = np.asarray(scores, dtype=np.float64)
    spread = values.std()
    return ((values - values.mean()) / spread if spread > 0 else np.zeros_like(values)).tolist()


AGREEMENT = "dev_kendall_tau"  # the evaluator's metric (``eval_`` before it in the trainer's logs)


def _evaluator(student: Student, rows: Sequence[Labelled]) -> Any:
    """The evaluator the trainer runs each epoch: the student's mean Kendall tau with the teacher over
    ``rows``' candidates (``AGREEMENT``), by which it keeps the best epoch."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class Agreement(BaseEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = AGREEMENT

        def __call__(
            self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
        ) -> dict[str, float]:
            return {AGREEMENT: agreement(student, rows)}

    return Agreement()


def agreement(model: Student, rows: Sequence[Labelled]) -> float:
    """Mean Kendall tau between the student's and the teacher's scores over ``rows``' candidates."""
    taus = [kendall_tau(own, row.teacher) for own, row in zip(model.scores(rows), rows)]
    return sum(taus) / len(taus)


def fusion_weight(
    model: Student, train: Sequence[Labelled], dev: Sequence[Labelled], judgements: Judgements
) -> tuple[float, str]:
    """The student's share of the score fused with the first stage.

    The share in ``FUSION_GRID`` with the best mean nDCG@10 on the held-out queries with judgements (at
    least ``MIN_JUDGED``; else on every judged training query, which the student has learned from);
    ties go to the share nearest the query-likelihood reranker's. Fewer judged queries than
    ``MIN_JUDGED`` keep that reranker's weight.

    Args:
        model: The trained student (its raw logits are fused, as ``CrossEncoderReranker`` fuses them).
        train: The queries it learned from.
        dev: The queries held out.
        judgements: Human judgements by (corpus, query id); a query an LLM wrote counts its document.

    Returns:
        The weight, and what it was chosen on (for ``rag_rerank.json`` and ``distilled.json``).
    """
    from rag_rerank.rerank.llm.query_likelihood import FUSION_WEIGHT

    judged = [(row, gains) for row in dev if (gains := _gains(row, judgements))]
    where = f"{len(judged)} judged held-out training queries"
    if len(judged) < MIN_JUDGED:
        judged = [(row, gains) for row in [*train, *dev] if (gains := _gains(row, judgements))]
        where = f"{len(judged)} judged training queries, most of them learned from"
    if len(judged) < MIN_JUDGED:
        return FUSION_WEIGHT, f"fewer than {MIN_JUDGED} judged training queries: the query-likelihood reranker's weight"
    scores = model.scores([row for row, _ in judged])
    results = {weight: _fused_ndcg(scores, judged, weight) for weight in FUSION_GRID}
    best = max(results.values())
    weight = min((w for w, value in results.items() if value == best), key=lambda w: abs(w - FUSION_WEIGHT))
    return weight, f"nDCG@10 {best:.3f} on {where} (first stage alone {results[0.0]:.3f})"


def _fused_ndcg(
    scores: Sequence[Sequence[float]], judged: Sequence[tuple[Labelled, dict[str, int]]], weight: float
) -> float:
    """Mean nDCG@10 of the student's ``scores`` fused at ``weight`` with each row's first stage."""
    from rag_rerank.evaluation.metrics import ndcg
    from rag_rerank.retrieval.fusion import with_first_stage

    total = 0.0
    for own, (row, gains) in zip(scores, judged):
        fused = [float(s) for s in with_first_stage(own, row.first_stage, weight) if s is not None]
        total += ndcg([row.doc_ids[i] for i in sorted(range(len(fused)), key=lambda i: -fused[i])], gains)
    return total / len(judged)


def _gains(row: Labelled, judgements: Judgements) -> dict[str, int]:
    """A row's judgements: its collection's, or the document an LLM wrote it for."""
    gains = {doc: gain for doc, gain in judgements.get(row.key, {}).items() if gain > 0}
    return gains or ({row.written_for: 1} if row.written_for else {})


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (0 where either is constant)."""
    import math

    from scipy.stats import kendalltau

    tau = float(kendalltau(a, b).statistic)
    return 0.0 if math.isnan(tau) else tau


def _save_whole(model: Student, output: Path, record: dict[str, Any], config: dict[str, Any], fp16: bool) -> Path:
    """Save into a folder beside ``output``, then rename it: ``output`` holds a whole student or nothing."""
    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model.save(partial, {**config, "seconds": record["seconds"]}, fp16)
        (partial / DISTILLED_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if output.exists():
            output.rmdir()  # empty: checked before training
        partial.rename(output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return output
