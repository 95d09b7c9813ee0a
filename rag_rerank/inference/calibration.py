"""Does a model's int8 graph rank as its float32 one does? Checked once per model on built-in pairs.

``backend="auto"`` picks int8 (``onnx-int8``) on CPUs where bfloat16 does not pay, because there it is
the fastest path that keeps nDCG@10 (README, Speed). Our int8 recipe was measured on MiniLM
cross-encoders; a user's model may have activations it quantises badly. So before auto keeps int8 it
scores these pairs both ways and asks for the same order per query (mean Kendall tau at least
``AGREEMENT``), else it runs the exact ONNX graph and says why. The verdict is cached beside the int8
graph, so this costs ~1 s once per model.

The pairs: six queries from unrelated fields, each with eight passages from clearly relevant to
unrelated, written for this check (no dataset licence to carry), of the lengths RAG chunks have.

Where bfloat16 pays too, auto also times int8 against OpenVINO's bfloat16 on the same texts joined
to passage length (``int8_speedup``; which is faster depends on the CPU), once per CPU and model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference.cache import cache_root, measured_once
from rag_rerank.inference.cpu import identity, speedup_of
from rag_rerank.inference.export import fingerprint

log = logging.getLogger(__name__)

# Mean Kendall tau per query. Measured with our int8 recipe: the shipped model 0.94 (its int8 keeps
# nDCG@10 on SciFact and Cranfield to 0.0001), MiniLM with an untrained head 0.83; a MiniLM whose
# LayerNorms carry four outlier channels (30-100x the rest, as larger models have) 0.60-0.62.
AGREEMENT = 0.8

QUERIES: dict[str, list[str]] = {
    "how does a vaccine train the immune system": [
        (
            "A vaccine exposes the immune system to a harmless form of a pathogen, such as an inactivated virus, "
            "a weakened strain or a single protein. B cells learn to make antibodies against it and memory cells "
            "persist, so a later infection is recognised and cleared before it causes disease."
        ),
        (
            "mRNA vaccines deliver instructions for a viral protein. Cells make the protein for a few days, the "
            "immune system responds to it, and the mRNA itself is broken down without entering the nucleus."
        ),
        (
            "Herd immunity arises when enough of a population is immune that a pathogen cannot spread, "
            "protecting people who cannot be vaccinated."
        ),
        (
            "Antibiotics kill bacteria or stop them from multiplying; they have no effect on viruses, which is "
            "why they are not prescribed for the common cold."
        ),
        ("The first smallpox vaccine was developed by Edward Jenner in 1796 using material from cowpox lesions."),
        (
            "Regular exercise and sleep are associated with better general health and lower rates of chronic "
            "disease in adults."
        ),
        "The stock market closed higher on Friday as technology shares recovered from early losses.",
        (
            "To repot a houseplant, choose a container slightly larger than the old one and loosen the roots "
            "before adding fresh soil."
        ),
    ],
    "python list comprehension syntax": [
        (
            "A list comprehension builds a list in one expression: [expression for item in iterable if "
            "condition]. For example, [x * x for x in range(10) if x % 2 == 0] gives the squares of even numbers."
        ),
        (
            "Comprehensions can nest: [(a, b) for a in range(3) for b in range(3)] loops over b inside a, the same "
            "order as two nested for statements."
        ),
        (
            "Generator expressions use parentheses instead of brackets and produce items lazily, which saves "
            "memory when the sequence is large."
        ),
        "Python dictionaries map keys to values and since version 3.7 they keep insertion order.",
        ("A for loop in Python iterates over any iterable object, calling next() until StopIteration is raised."),
        "JavaScript arrays have map and filter methods that take callback functions.",
        "The Amazon river carries more water than any other river in the world.",
        "Sourdough bread is leavened by a culture of wild yeast and lactic acid bacteria.",
    ],
    "causes of the french revolution": [
        (
            "The French Revolution of 1789 had several causes: a fiscal crisis after costly wars, a tax system "
            "that exempted the nobility and clergy, poor harvests that raised bread prices, and Enlightenment "
            "ideas that questioned the divine right of kings."
        ),
        (
            "By 1788 the French crown was nearly bankrupt, and Louis XVI summoned the Estates-General for the "
            "first time since 1614 to approve new taxes."
        ),
        "The storming of the Bastille on 14 July 1789 became a symbol of the revolution.",
        "Napoleon Bonaparte rose to power in a coup in 1799 and later crowned himself emperor.",
        "The American Revolution ended with the Treaty of Paris in 1783.",
        "The Industrial Revolution began in Britain with mechanised textile production and steam power.",
        "A balanced diet includes vegetables, whole grains and sources of protein.",
        "Graphics cards contain thousands of small cores suited to parallel arithmetic.",
    ],
    "what determines the interest rate on a mortgage": [
        (
            "Mortgage rates follow the central bank's policy rate and long-term bond yields, plus a margin for "
            "the lender's risk. A borrower's credit score, deposit size and the length of the fixed period "
            "change the rate offered to them."
        ),
        (
            "A larger down payment lowers the loan-to-value ratio, and lenders usually offer lower rates to "
            "borrowers who borrow a smaller share of the property's value."
        ),
        (
            "Fixed-rate mortgages keep the same rate for the whole term, while variable-rate mortgages move with "
            "a reference rate."
        ),
        "Inflation erodes the purchasing power of savings held in cash.",
        "Property taxes are set by local governments and are based on the assessed value of the home.",
        "A credit card charges interest on balances not paid in full each month.",
        "Penguins live mostly in the Southern Hemisphere and cannot fly.",
        "The violin has four strings tuned in perfect fifths.",
    ],
    "how to keep bread from going stale": [
        (
            "Bread goes stale as its starch recrystallises, which happens fastest at refrigerator temperature. "
            "Keep bread at room temperature in a paper or cloth bag for a day or two, or slice and freeze it "
            "and toast slices straight from the freezer."
        ),
        "A bread box keeps some humidity around the loaf while letting enough air circulate to prevent mould.",
        ("Stale bread can be refreshed by sprinkling it with water and warming it in a hot oven for a few minutes."),
        "Breadcrumbs and croutons are good uses for bread that has already gone stale.",
        "Yeast ferments sugars in dough, producing carbon dioxide that makes bread rise.",
        "Rice should be rinsed before cooking to remove excess surface starch.",
        "The Hubble Space Telescope was launched into low Earth orbit in 1990.",
        "Contract law requires an offer, acceptance and consideration for an agreement to be binding.",
    ],
    "why is the sky blue": [
        (
            "Sunlight is scattered by the molecules of the air, and shorter wavelengths scatter much more than "
            "longer ones (Rayleigh scattering). Blue light is scattered across the whole sky, so the sky looks "
            "blue from every direction."
        ),
        (
            "At sunrise and sunset light crosses more atmosphere, so most blue light is scattered away and the "
            "remaining light looks red and orange."
        ),
        (
            "Clouds look white because their water droplets are large enough to scatter all visible wavelengths "
            "about equally."
        ),
        "The ocean looks blue partly because water absorbs red light more strongly than blue light.",
        "A rainbow forms when sunlight is refracted and reflected inside raindrops.",
        "Mars has a thin atmosphere made mostly of carbon dioxide.",
        "A good cover letter is tailored to the job and explains why the applicant fits the role.",
        "Chess openings such as the Sicilian Defence have been studied for centuries.",
    ],
}


def pairs() -> list[tuple[str, str]]:
    return [(query, passage) for query, passages in QUERIES.items() for passage in passages]


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean Kendall tau per query between two scorings of ``pairs()``; -1 (never agreeing) where
    the candidate has a NaN or infinite score."""
    from scipy.stats import kendalltau

    if not np.isfinite(candidate).all():
        return -1.0

    taus, start = [], 0
    for passages in QUERIES.values():
        end = start + len(passages)
        tau = kendalltau(reference[start:end], candidate[start:end]).statistic
        taus.append(0.0 if np.isnan(tau) else float(tau))  # constant scores rank nothing
        start = end
    return float(np.mean(taus))


Logits = Callable[[Sequence[tuple[str, str]]], np.ndarray]


def verdict_path(hf_model: Any, path: str) -> Path:
    """Where what is measured about ``hf_model``'s ``path`` (e.g. "openvino-bfloat16") on this CPU is
    kept: lossy kernels differ between CPUs (AMX, AVX-512 BF16), so the verdict is per CPU too."""
    return cache_root() / "verdicts" / fingerprint(hf_model) / f"{path}-{identity()}.json"


def ranks_alike(float32_logits: Logits, lossy_logits: Logits, verdict: Path) -> tuple[bool, float]:
    """Whether a lossy path (int8, bfloat16) ranks ``pairs()`` as float32 does, every score finite, and
    its mean tau; measured once, then read from ``verdict``."""
    calibration = pairs()
    tau = _measured_once(
        verdict,
        "kendall_tau",
        calibration,
        lambda: agreement(np.asarray(float32_logits(calibration)), np.asarray(lossy_logits(calibration))),
    )
    return tau >= AGREEMENT, tau


def int8_verdict(int8_graph: Path) -> Path:
    """Where ``ranks_alike`` keeps its verdict on the int8 graph at ``int8_graph``, on this CPU."""
    return int8_graph.with_name(f"{int8_graph.name}.agreement-{identity()}.json")


COSINE_AGREEMENT = 0.998  # all-MiniLM-L6-v2 in int8: 0.9997 (dense nDCG@10 within 0.0026); bfloat16: 0.99999


def vectors_agree(
    float32_vectors: Callable[[list[str]], np.ndarray], lossy_vectors: Callable[[list[str]], np.ndarray], verdict: Path
) -> tuple[bool, float]:
    """Whether a bi-encoder's lossy path (int8, bfloat16) embeds the calibration texts (queries and
    passages) as its float32 does: every number finite and mean cosine at least ``COSINE_AGREEMENT``;
    and that cosine (-1 where a vector is not finite). Measured once, then read from ``verdict``."""
    calibration = pairs()
    texts = list(dict.fromkeys(text for pair in calibration for text in pair))

    def cosine() -> float:
        lossy = np.asarray(lossy_vectors(texts))
        if not np.isfinite(lossy).all():
            return -1.0
        return float((np.asarray(float32_vectors(texts)) * lossy).sum(axis=1).mean())

    mean = _measured_once(verdict, "cosine", calibration, cosine)
    return mean >= COSINE_AGREEMENT, mean


def timing_pairs() -> list[tuple[str, str]]:
    """24 pairs of the lengths a reranker meets (abstracts, chunks: ~150-350 tokens, varied, so
    batches sort and pad as in use): each query with four runs of four of its passages joined."""
    return [
        (query, " ".join((passages * 2)[start : start + 4]))
        for query, passages in QUERIES.items()
        for start in range(0, len(passages), 2)
    ]


def int8_speedup(int8_logits: Logits, other_logits: Logits, int8_graph: Path, other: str, attempt: int = 1) -> float:
    """How many times faster the int8 graph scores ``timing_pairs()`` than ``other`` (a backend name)
    on this CPU, the two timed in turns, best of 3 each; measured once per model, CPU, ``other`` and
    ``attempt`` (a second measurement where the first fell within noise of a threshold), then read
    from a file beside the graph."""
    timing = timing_pairs()
    again = "" if attempt == 1 else f"-attempt{attempt}"
    return _measured_once(
        int8_graph.with_name(f"{int8_graph.name}.speedup-{other}-{identity()}{again}.json"),
        "speedup",
        timing,
        lambda: speedup_of(lambda: other_logits(timing), lambda: int8_logits(timing), rounds=3),
    )


def _measured_once(verdict: Path, name: str, on: list[tuple[str, str]], measure: Callable[[], float]) -> float:
    """``measure()``, or what an earlier process saved in ``verdict`` for these very pairs (edited
    pairs: measured again): ``graph_cache.measured_once``."""
    return measured_once(verdict, name, measure, inputs=hashlib.sha256(json.dumps(on).encode()).hexdigest()[:16])
