"""What the local LMs (torch's ``TransformersLM``, llama.cpp's ``LlamaCppLM``) do alike with tokens and
scores, written once."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class NonFiniteLogprob(RuntimeError):
    """The model computed a NaN or infinite log-probability: never passed on as a score."""


def label_tokens(
    labels: Sequence[str], tokens: Callable[[str], list[int]], decode: Callable[[int], str], model: str
) -> list[list[int]]:
    """Each label's possible first tokens: the label in lower case or capitalised, with or without a
    leading space (a lone space token left out).

    Args:
        labels: Words such as ``"yes"`` and ``"no"``.
        tokens: A text in the model's tokens, without special tokens.
        decode: One token as text.
        model: The model's name, for the error.

    Returns:
        One list of token ids per label.

    Raises:
        ValueError: a label has no first token, or two labels share one.
    """
    variants = []
    for label in labels:
        words = {label, label.lower(), label.capitalize()}
        firsts = {ids[0] for word in words for spaced in (word, " " + word) if (ids := tokens(spaced))}
        variants.append(sorted(t for t in firsts if decode(t).strip()))
    every = [t for v in variants for t in v]
    if any(not v for v in variants) or len(every) != len(set(every)):
        raise ValueError(f"labels {list(labels)} need distinct first tokens in {model}'s vocabulary")
    return variants


def heads_and_tail(
    contexts: Sequence[str], continuation: str, tokens: Callable[[str], list[int]], bos: int | None
) -> tuple[list[list[int]], list[int]]:
    """``continuation_logprobs``'s tokens: each context with the model's ``bos`` first, and the continuation.

    Raises:
        ValueError: the continuation is empty in the model's tokens.
    """
    tail = tokens(continuation)
    if not tail:
        raise ValueError("the continuation is empty in the model's tokens")
    return [with_bos(tokens(context), bos) for context in contexts], tail


def query_likelihoods(llm: Any, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """log P(" " + query | passage) for each (query, passage), a query's passages in one call: how
    ``auto`` compares two paths of one LM on the calibration pairs."""
    by_query = itertools.groupby(pairs, key=lambda pair: pair[0])
    return np.array([s for q, group in by_query for s in llm.continuation_logprobs([p for _, p in group], " " + q)])


def with_bos(ids: list[int], bos: int | None) -> list[int]:
    """``ids`` starting with the model's beginning-of-text token ``bos`` (None or negative: it has none)."""
    return ids if bos is None or bos < 0 or (ids and ids[0] == bos) else [bos, *ids]


def finite(values: np.ndarray, what: str, model: str) -> np.ndarray:
    """``values``, or NonFiniteLogprob naming ``model`` (with its backend and precision) and ``what``."""
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise NonFiniteLogprob(f"{model} computed {bad} non-finite {what}")
    return values
