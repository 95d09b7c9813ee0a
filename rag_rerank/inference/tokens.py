"""Pairs and texts as token ids, batched: what every runtime of both encoders is fed.

Pairs are tokenised as the model's own tokenizer would (special tokens from its post-processor,
"longest_first" truncation), each distinct query once; batches are sorted by token count, longest
first, so each holds little padding. ``SavedTokenizer`` gives the loaded tokenizer's ids without
transformers, from its saved pipeline (a warm start, ``inference.warm``).
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


SIDES = ("right", "left")


def tokenizer_record(tokenizer: Any) -> dict[str, Any] | None:
    """What ``SavedTokenizer`` needs of a loaded fast tokenizer, as JSON: the ``tokenizers`` pipeline
    it runs (as transformers built it: any normaliser or added token it changed included) and how it
    pads and truncates; None for a tokenizer it cannot stand in for (a slow one, one without a
    post-processor or a padding token)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    sides = (getattr(tokenizer, "padding_side", None), getattr(tokenizer, "truncation_side", None))
    if backend is None or backend.post_processor is None or tokenizer.pad_token_id is None or {*sides} - {*SIDES}:
        return None
    return {
        "pipeline": backend.to_str(),
        "input_names": list(tokenizer.model_input_names),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_type_id": int(tokenizer.pad_token_type_id),
        "padding_side": sides[0],
        "truncation_side": sides[1],
    }


class Encoded(dict[str, Any]):
    """Token ids by name, with the ``tokenizers`` encodings behind them (as transformers' ``BatchEncoding``)."""

    def __init__(self, values: dict[str, Any], encodings: list[Any]):
        super().__init__(values)
        self.encodings = encodings


class SavedTokenizer:
    """A model's fast tokenizer without transformers (0.03 s to load instead of seconds of imports):
    the pipeline ``tokenizer_record`` saved, with the part of transformers' tokenizer interface that
    rag_rerank calls, giving the same ids: special tokens from its post-processor, truncation to
    ``max_length`` special tokens included on its truncation side, padding with its padding token.
    Its pipeline never truncates or pads by itself, so threads may share it."""

    def __init__(self, record: dict[str, Any]):
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_str(record["pipeline"])
        self.backend_tokenizer.no_truncation()  # a tokenizer.json may carry either (all-MiniLM-L6-v2's: 128)
        self.backend_tokenizer.no_padding()
        self.model_input_names: list[str] = list(record["input_names"])
        self._pads = {"input_ids": record["pad_id"], "token_type_ids": record["pad_type_id"], "attention_mask": 0}
        self._padding_side: str = record["padding_side"]
        self._truncation_side: str = record["truncation_side"]

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
        verbose: bool = True,
        return_offsets_mapping: bool = False,
    ) -> Encoded:
        """``text``'s ids (lists for a str, lists of lists for texts), as transformers' call gives them."""
        texts = [text] if isinstance(text, str) else list(text)
        post_processor = self.backend_tokenizer.post_processor
        if truncation and max_length is None:
            raise TypeError("truncation=True needs max_length")
        specials = post_processor.num_special_tokens_to_add(False) if add_special_tokens else 0
        budget = (max_length or 0) - specials
        encodings = []
        for encoding in self.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
            if truncation:
                encoding.truncate(max(budget, 0), direction=self._truncation_side)
            encodings.append(post_processor.process(encoding, None, add_special_tokens=add_special_tokens))
        values = {"input_ids": [e.ids for e in encodings]}
        if "token_type_ids" in self.model_input_names:
            values["token_type_ids"] = [e.type_ids for e in encodings]
        if "attention_mask" in self.model_input_names:
            values["attention_mask"] = [e.attention_mask for e in encodings]
        if return_offsets_mapping:
            values["offset_mapping"] = [e.offsets for e in encodings]
        if isinstance(text, str):
            values = {key: rows[0] for key, rows in values.items()}
        return Encoded(values, encodings)

    def pad(self, features: dict[str, list[list[int]]], return_tensors: str = "np") -> dict[str, np.ndarray]:
        """``features`` padded to their longest row, as int64 arrays (transformers' ``pad``)."""
        if return_tensors != "np":
            raise ValueError(f"SavedTokenizer pads to numpy arrays only, not {return_tensors!r}")
        length = max((len(row) for row in features["input_ids"]), default=0)
        padded = {}
        for key, rows in features.items():
            array = np.full((len(rows), length), self._pads[key], dtype=np.int64)
            for i, row in enumerate(rows):
                if self._padding_side == "right":
                    array[i, : len(row)] = row
                else:
                    array[i, length - len(row) :] = row
            padded[key] = array
        return padded


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
