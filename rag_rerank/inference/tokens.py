"""Pairs and texts as token ids, batched: what every runtime of both encoders is fed.

Pairs are tokenised as the model's own tokenizer would (special tokens from its post-processor,
"longest_first" truncation), each distinct query once; batches are sorted by token count, longest
first, so each holds little padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

Pairs = Sequence[tuple[str, str]]


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> dict[str, list[list[int]]]:
    """What ``tokenizer(queries, passages, truncation=True, max_length=...)`` gives, with each
    distinct query tokenised once instead of once per passage (a server reranks 100 passages for
    one query). Truncation is the fast tokenizers' "longest_first"; special tokens come from the
    tokenizer's own post-processor, so any architecture's pair layout is kept."""
    post_processor = _post_processor(tokenizer)
    if post_processor is None:  # a slow (Python) tokenizer: it pairs them itself
        return tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length)
    budget = max_length - post_processor.num_special_tokens_to_add(True)
    whole, passages = _encodings_once(tokenizer, pairs)
    cut_queries: dict[tuple[str, int], Any] = {}
    encoded: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    for (query, _), passage in zip(pairs, passages):
        first = whole[query]
        keep_first, keep_second = _longest_first(len(first.ids), len(passage.ids), budget)
        if keep_first < len(first.ids):  # a query longer than half the model's length: rare
            if (query, keep_first) not in cut_queries:
                cut_queries[(query, keep_first)] = _encodings(tokenizer, [query])[0]
                cut_queries[(query, keep_first)].truncate(keep_first)
            first = cut_queries[(query, keep_first)]
        if keep_second < len(passage.ids):
            passage.truncate(keep_second)
        pair = post_processor.process(first, passage, add_special_tokens=True)
        encoded["input_ids"].append(pair.ids)
        encoded["token_type_ids"].append(pair.type_ids)
        encoded["attention_mask"].append(pair.attention_mask)
    if "token_type_ids" not in tokenizer.model_input_names:
        del encoded["token_type_ids"]
    return encoded


def pair_lengths(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[int]:
    """Each pair's length in the model's tokens, special tokens included, before any truncation;
    each distinct query tokenised once (as in ``encode_pairs``)."""
    post_processor = _post_processor(tokenizer)
    if post_processor is None:
        firsts, seconds = [q for q, _ in pairs], [p for _, p in pairs]
        return list(tokenizer(firsts, seconds, truncation=False, return_length=True, verbose=False)["length"])
    specials = post_processor.num_special_tokens_to_add(True)
    whole, passages = _encodings_once(tokenizer, pairs)
    return [len(whole[query].ids) + len(passage.ids) + specials for (query, _), passage in zip(pairs, passages)]


def _post_processor(tokenizer: Any) -> Any:
    """The fast tokenizer's own pair layout (special tokens), or None for a slow tokenizer."""
    return getattr(getattr(tokenizer, "backend_tokenizer", None), "post_processor", None)


def _encodings_once(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], list[Any]]:
    """Each distinct query's encoding, and each passage's, without special tokens or truncation."""
    queries = list(dict.fromkeys(q for q, _ in pairs))
    return dict(zip(queries, _encodings(tokenizer, queries))), _encodings(tokenizer, [p for _, p in pairs])


def _encodings(tokenizer: Any, texts: list[str]) -> list[Any]:
    # through the tokenizer's own call, which sets (and resets) the backend's truncation state
    return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).encodings


def _longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each sequence Hugging Face's fast tokenizers keep under "longest_first":
    a sequence shorter than half the budget is kept whole; otherwise each gets half, the longer
    one the odd token."""
    budget = max(budget, 0)
    if first + second <= budget:
        return first, second
    half = budget // 2
    if first <= half:
        return first, budget - first
    if second <= half:
        return budget - second, second
    return (budget - half, half) if first > second else (half, budget - half)


def loaded_dtype(model: CrossEncoder) -> str:
    """The precision the loaded torch model computes in ("float32", "bfloat16", "float16")."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def max_length_of(model: CrossEncoder) -> int:
    """The most tokens the model reads (sentence-transformers 6 renamed max_length to max_seq_length)."""
    return int(getattr(model, "max_seq_length", None) or model.max_length)


def length_batches(model: CrossEncoder, pairs: Pairs, batch_size: int) -> tuple[list[np.ndarray], list[dict]]:
    """Pairs encoded as the tokenizer would (``encode_pairs``), longest first, padded per batch;
    with the rows of ``pairs`` each batch holds."""
    return padded_batches(model.tokenizer, encode_pairs(model.tokenizer, pairs, max_length_of(model)), batch_size)


def padded_batches(tokenizer: Any, encoded: Any, batch_size: int) -> tuple[list[np.ndarray], list[dict]]:
    """Encoded texts (unpadded token ids) sorted by token count, longest first, and padded per batch
    of ``batch_size``: little padding in each batch; with the rows each batch holds."""
    order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
    rows = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches = [tokenizer.pad({key: [encoded[key][i] for i in r] for key in encoded}, return_tensors="np") for r in rows]
    return rows, batches


def scatter(rows: list[np.ndarray], outputs: Iterable[np.ndarray], count: int) -> np.ndarray:
    """Each batch's logits back in the order of the pairs."""
    logits = np.empty(count, dtype=np.float32)
    for r, output in zip(rows, outputs):
        logits[r] = output[:, 0]
    return logits


def feeds(features: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A padded batch as int64 inputs by name (zero token types for tokenizers without them)."""
    zeros = np.zeros_like(features["input_ids"])  # for tokenizers without token types
    return {name: np.asarray(features.get(name, zeros)).astype(np.int64) for name in names}
