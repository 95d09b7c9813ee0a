"""Distillation: a fast student trained on a slow teacher's scores, never on human judgements.

The teacher's scores of each query's candidates (``teacher.label``) are standardised per query (so any
teacher's scale will do); the student learns them with a listwise KL divergence (the teacher's softmax
over a query's candidates against the student's) or margin-MSE (the teacher's score difference of every
ordered pair of candidates). A tenth of the queries is held out: the student's agreement with the
teacher there (mean Kendall tau) chooses the epoch, the base model's own agreement counting as epoch 0.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from rag_rerank.training.students import STUDENTS, Student
from rag_rerank.training.teacher import Labelled, check_finite

if TYPE_CHECKING:
    import torch

Loss = Literal["kl", "margin-mse"]
# What a distilled student keeps beside its weights: its teacher, recipe and agreement by epoch.
DISTILLED_FILE = "distilled.json"


@dataclass(frozen=True)
class Recipe:
    """How a student is trained.

    Args:
        loss: ``"kl"`` (listwise, over each query's candidates) or ``"margin-mse"`` (over its pairs).
        epochs: Passes over the training queries; the epoch that agrees best on held-out queries is kept.
        queries_per_step: Queries per optimiser step.
        learning_rate: AdamW's, with 10% warm-up and linear decay.
        max_length: Tokens per (query, passage) pair (the bi-encoder: per text, at most its own limit).
        temperature: The teacher's softmax temperature over standardised scores (``kl``).
        sample: Candidates of a query per step, drawn afresh each epoch (None: all); fewer cost less.
        dev_fraction: Share of the queries held out to measure agreement.
        seed: Which queries are held out, their order, the student's dropout.
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
        teacher: The teacher-scores header (teacher, command), kept in ``distilled.json``.
        fp16: Save a cross-encoder student's weights in float16 (they load as float32).
        device: ``"cuda"`` where there is one, else ``"cpu"`` (default).
        bf16: Train under bfloat16 autocast (None: on an accelerator, and on a CPU that multiplies
            bfloat16 at least 1.2x faster than float32); the weights stay float32.
        show_progress: Progress bars and a line per epoch.

    Returns:
        ``output_dir``, holding the student and ``distilled.json`` (teacher, recipe, agreement by epoch
        beside the first stage's own agreement, time, and which queries it learned from).

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
    model = STUDENTS[student](base_model or _default_base(student), recipe.max_length, device)
    bf16 = _bf16_pays(device) if bf16 is None else bf16
    started = time.perf_counter()
    history, best = _fit(model, train, dev, recipe, bf16, show_progress)
    model.network().load_state_dict(best)
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
        "bf16_autocast": bf16,
        "seconds": round(time.perf_counter() - started),
    }
    return _save_whole(model, output, record, fp16)


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


def _fit(
    model: Student, train: list[Labelled], dev: list[Labelled], recipe: Recipe, bf16: bool, show_progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train ``recipe.epochs`` epochs; (agreement by epoch, the weights of the best one)."""
    import torch
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(recipe.seed)
    steps = recipe.epochs * -(-len(train) // recipe.queries_per_step)
    optimizer = torch.optim.AdamW(model.parameter_groups(recipe.learning_rate), weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    history = [{"epoch": 0, "dev_kendall_tau": agreement(model, dev)}]
    best = (history[0]["dev_kendall_tau"], _copy(model))
    rng = random.Random(recipe.seed)
    for epoch in range(1, recipe.epochs + 1):
        order = [sampled(row, recipe.sample, rng) for row in train]
        rng.shuffle(order)
        for rows in _steps(order, recipe.queries_per_step, f"epoch {epoch}", show_progress):
            _step(model, rows, recipe, bf16, optimizer)
            schedule.step()
        tau = agreement(model, dev)
        history.append({"epoch": epoch, "dev_kendall_tau": tau})
        if show_progress:
            print(
                f"epoch {epoch}: Kendall tau with the teacher on {len(dev)} held-out queries {tau:.3f} "
                f"(before training {history[0]['dev_kendall_tau']:.3f})"
            )
        if tau > best[0]:
            best = (tau, _copy(model))
    return history, best[1]


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


def _steps(rows: list[Labelled], size: int, label: str, show_progress: bool) -> Iterator[list[Labelled]]:
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(rows), size), desc=label, disable=not show_progress):
        yield rows[start : start + size]


def _step(model: Student, rows: list[Labelled], recipe: Recipe, bf16: bool, optimizer: torch.optim.Optimizer) -> None:
    """One optimiser step over ``rows``: the mean of their losses."""
    import torch

    model.network().train()
    with torch.autocast(model.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        scores = [model.scores(row) for row in rows]
    torch.stack([loss(s.float(), row.teacher, recipe) for s, row in zip(scores, rows)]).mean().backward()
    torch.nn.utils.clip_grad_norm_(model.network().parameters(), 1.0)
    optimizer.step()
    model.after_step()
    optimizer.zero_grad()


def _copy(model: Student) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.network().state_dict().items()}


def loss(student: torch.Tensor, teacher: Sequence[float], recipe: Recipe) -> torch.Tensor:
    """The student's loss on one query: listwise KL or margin-MSE against the standardised teacher scores."""
    import torch

    target = torch.tensor(standardised(teacher), dtype=torch.float32, device=student.device)
    if recipe.loss == "kl":
        wanted = torch.softmax(target / recipe.temperature, -1)
        return torch.nn.functional.kl_div(torch.log_softmax(student, -1), wanted, reduction="sum")
    i, j = torch.triu_indices(len(target), len(target), offset=1, device=student.device)
    return torch.nn.functional.mse_loss(student[i] - student[j], target[i] - target[j])


def standardised(scores: Sequence[float]) -> list[float]:
    """``scores`` less their mean, over their standard deviation (all 0 where they are equal)."""
    import numpy as np

    values = np.asarray(scores, dtype=np.float64)
    spread = values.std()
    return ((values - values.mean()) / spread if spread > 0 else np.zeros_like(values)).tolist()


def agreement(model: Student, rows: Sequence[Labelled]) -> float:
    """Mean Kendall tau between the student's and the teacher's scores over ``rows``' candidates."""
    import torch

    model.network().eval()
    with torch.inference_mode():
        taus = [kendall_tau(model.scores(row).cpu().tolist(), row.teacher) for row in rows]
    return sum(taus) / len(taus)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (0 where either is constant)."""
    import math

    from scipy.stats import kendalltau

    tau = float(kendalltau(a, b).statistic)
    return 0.0 if math.isnan(tau) else tau


def _save_whole(model: Student, output: Path, record: dict[str, Any], fp16: bool) -> Path:
    """Save into a folder beside ``output``, then rename it: ``output`` holds a whole student or nothing."""
    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model.save(partial, {"distilled": True, "recipe": record["recipe"], "seconds": record["seconds"]}, fp16)
        (partial / DISTILLED_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if output.exists():
            output.rmdir()  # empty: checked before training
        partial.rename(output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return output
