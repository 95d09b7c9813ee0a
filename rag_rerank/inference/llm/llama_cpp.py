"""A GGUF model in this process through llama.cpp (llama-cpp-python): the file as shipped (Q4_K_M and
the like, no dequantised copy), on the CPU's own quantised kernels (AVX2, AVX-512 VNNI, AMX).

Scoring packs several prompts into one ``llama_decode`` as separate sequences of one KV cache, and asks
for the output layer only at the positions read (the continuation's, or the last): Gemma 3 270M's
output layer (262,144 words) costs more than the rest of the model at every other position.
Generation goes through llama-cpp-python's own completion API (greedy).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference.llm.shared import finite, heads_and_tail, label_tokens, with_bos
from rag_rerank.inference.llm.sources import LLMNotFoundError, file_key, gguf_file
from rag_rerank.inference.llm.transformers_lm import MAX_NEW_TOKENS

BATCH_SIZE = 8  # prompts per decode: one matmul of ~2,500 token rows; more gain nothing on a CPU
CONTEXT = 2048  # tokens per prompt (and answer) at most
UBATCH = 512  # tokens per compute step: the same speed as one step per decode, a third less memory


class LlamaCppLM:
    """A GGUF causal LM on llama.cpp: log-likelihoods of continuations, next-token label probabilities,
    and text, as ``TransformersLM`` gives them.

    Args:
        model: A ``.gguf`` file or an offline model's name (``gemma-3-270m``, ``smollm2-135m-instruct``);
            None for ``DEFAULT_LLM``.
        batch_size: Prompts per decode.
        max_new_tokens: The longest answer ``complete`` writes.
        context: Tokens one prompt (with its continuation or answer) may have.
        threads: CPU threads (default: every core this process may use).

    ``close()`` frees the model and its contexts at once (else when the object is collected, or at exit).

    Raises:
        LLMNotFoundError: the name is not a GGUF file here, or llama-cpp-python is not installed.
    """

    backend = "llama.cpp"

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = BATCH_SIZE,
        max_new_tokens: int = MAX_NEW_TOKENS,
        context: int = CONTEXT,
        threads: int | None = None,
    ):
        try:
            import llama_cpp
        except ImportError as error:
            raise LLMNotFoundError(
                "the llama.cpp backend needs llama-cpp-python: pip install 'rag-rerank[local-llm]'"
            ) from error
        self.model_name, self.path = gguf_file(model)
        self.batch_size, self.max_new_tokens, self.context = batch_size, max_new_tokens, context
        self.device = "cpu"
        if not hasattr(llama_cpp, "llama_memory_clear"):  # scoring needs the memory API (llama.cpp, mid-2025)
            raise LLMNotFoundError(
                f"llama-cpp-python {llama_cpp.__version__} is too old for the llama.cpp backend: "
                "pip install -U llama-cpp-python, or load_llm(..., backend='torch')"
            )
        threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._llama = llama_cpp.Llama(
            str(self.path), n_ctx=context, n_threads=threads, n_threads_batch=threads, swa_full=False, verbose=False
        )
        self.dtype = _file_type(self._llama)  # e.g. "Q4_K_M": what the weights are, as a score cache names it
        self._vocab = self._llama.n_vocab()
        self._scoring = _ScoringContext(self._llama, batch_size * context, batch_size, threads)
        # freed when collected, or at exit while llama_cpp can still be called (not in __del__ at shutdown)
        self.close = weakref.finalize(self, _free, self._scoring, self._llama)
        template = self._llama.metadata.get("tokenizer.chat_template")
        self.chat = template is not None
        self._lock = threading.Lock()  # one decode at a time: each already uses every core

    @functools.cached_property
    def cache_key(self) -> str:
        """What a score of this model depends on (a score cache's key): the file, its weight type and
        llama-cpp-python's version."""
        import llama_cpp

        return f"{self.model_name} (llama.cpp {self.dtype}, {llama_cpp.__version__}, file {file_key(self.path)})"

    def __repr__(self) -> str:
        return f"LlamaCppLM({self.model_name!r}, dtype={self.dtype!r})"

    def tokens(self, text: str) -> list[int]:
        """``text`` in the model's tokens, without special tokens."""
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=False))

    def continuation_logprobs(self, contexts: Sequence[str], continuation: str) -> list[float]:
        """log P(continuation | context) for each context, summed over the continuation's tokens.

        Args:
            contexts: The texts before the continuation (a prompt with one document each).
            continuation: The same text after each (the query).

        Returns:
            One finite log-probability per context, in order.
        """
        heads, tail = heads_and_tail(contexts, continuation, self.tokens, self._llama.token_bos())
        rows = [(head, len(tail) + 1) for head in heads]
        out = np.zeros(len(contexts))
        for i, logits in self._read(rows, tail):
            out[i] = _log_softmax(logits[:-1])[np.arange(len(tail)), tail].sum()  # position t predicts t + 1
        return self._finite(out, "continuation log-probabilities").tolist()

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """For each prompt, the log-probability that the answer starts with each label.

        Args:
            prompts: The prompts (the chat template is applied where the model has one).
            labels: Words such as ``"yes"`` and ``"no"``, matched with or without a leading space, in
                lower case or capitalised (the probabilities of those first tokens are added up).

        Returns:
            One row per prompt, one finite log-probability per label.

        Raises:
            ValueError: two labels start with the same token in this model's vocabulary.
        """
        variants = label_tokens(
            labels, self.tokens, lambda t: self._llama.detokenize([t]).decode(errors="replace"), self.model_name
        )
        out = np.zeros((len(prompts), len(variants)))
        for i, logits in self._read([(self._prompt_ids(prompt), 1) for prompt in prompts], []):
            logprobs = _log_softmax(logits)[-1]
            out[i] = [np.logaddexp.reduce(logprobs[ids]) for ids in variants]
        return self._finite(out, "label log-probabilities").tolist()

    def complete(self, prompt: str) -> str:
        """The model's answer to ``prompt`` (greedy, at most ``max_new_tokens``; chat template where it has one)."""
        ids = self._prompt_ids(prompt)  # the template as TransformersLM applies it (llama-cpp-python's differs)
        with self._lock:
            self._llama.reset()  # no prefix kept from the last answer: the sliding-window cache is not full-size
            text: Any = self._llama.create_completion(ids, max_tokens=self.max_new_tokens, temperature=0.0)
        return str(text["choices"][0]["text"]).strip()

    async def acomplete(self, prompt: str) -> str:
        return await asyncio.to_thread(self.complete, prompt)

    def _read(self, rows: list[tuple[list[int], int]], tail: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """For each row (its head's tokens, how many logits to read), ``head + tail`` decoded and the
        logits of its last positions; rows of similar length share a decode."""
        longest = max((len(head) for head, _ in rows), default=0) + len(tail)
        if longest > self.context:  # before any decode: none is wasted on the shorter rows
            raise ValueError(
                f"a prompt of {longest} tokens is longer than the {self.context} this {self.model_name} "
                "context holds: cut the passages (max_passage_tokens) or pass a larger context="
            )
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            sequences = [(rows[i][0] + tail, rows[i][1]) for i in chosen]
            with self._lock:
                logits = self._scoring.logits(sequences, self._vocab)
            yield from zip(chosen, logits)

    def _prompt_ids(self, prompt: str) -> list[int]:
        if not self.chat:
            return self._with_bos(self.tokens(prompt))
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        metadata = self._llama.metadata
        formatter = Jinja2ChatFormatter(
            metadata["tokenizer.chat_template"],
            eos_token=self._piece(self._llama.token_eos()),
            bos_token=self._piece(self._llama.token_bos()),
            add_generation_prompt=True,
        )
        text = formatter(messages=[{"role": "user", "content": prompt}]).prompt
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    def _piece(self, token: int) -> str:
        return "" if token < 0 else self._llama.detokenize([token], special=True).decode(errors="replace")

    def _with_bos(self, ids: list[int]) -> list[int]:
        return with_bos(ids, self._llama.token_bos())

    def _finite(self, values: np.ndarray, what: str) -> np.ndarray:
        return finite(values, what, f"{self.model_name} ({self.backend}, {self.dtype})")


class _ScoringContext:
    """A llama.cpp context of its own for scoring: ``sequences`` prompts per decode, each its own
    sequence in one KV cache (emptied before each decode), logits only where asked."""

    def __init__(self, llama: Any, tokens: int, sequences: int, threads: int):
        import llama_cpp

        self._lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = tokens
        params.n_ubatch = min(UBATCH, tokens)
        params.n_seq_max, params.kv_unified = sequences, False  # a cache per prompt: attention within it
        params.swa_full = False  # each decode starts from an empty cache: no window to keep whole
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise RuntimeError(
                f"llama.cpp could not make a context of {tokens} tokens for scoring (memory?): pass a smaller "
                "batch_size or context, or load_llm(..., backend='torch')"
            )
        self._batch = llama_cpp.llama_batch_init(tokens, 0, 1)
        self._tokens = tokens

    def logits(self, sequences: list[tuple[list[int], int]], vocab: int) -> list[np.ndarray]:
        """For each (tokens, n): the logits at its last n positions, a (n, vocab) array."""
        llama_cpp = self._lib
        total = sum(len(tokens) for tokens, _ in sequences)
        if total > self._tokens:
            raise ValueError(f"{total} tokens in one decode, more than the {self._tokens} the context holds")
        if any(n > len(tokens) for tokens, n in sequences):
            raise ValueError("a prompt has fewer tokens than the positions to read from it")
        if not self._ctx:
            raise RuntimeError("this LlamaCppLM was closed")
        batch, at, read = self._batch, 0, []
        for seq, (tokens, n) in enumerate(sequences):
            for pos, token in enumerate(tokens):
                batch.token[at], batch.pos[at], batch.n_seq_id[at] = token, pos, 1
                batch.seq_id[at][0] = seq
                batch.logits[at] = pos >= len(tokens) - n
                at += 1
            read.append(range(at - n, at))
        batch.n_tokens = total
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        if (code := llama_cpp.llama_decode(self._ctx, batch)) != 0:
            raise RuntimeError(
                f"llama.cpp's decode failed (code {code}; 1: no room in its cache) on {len(sequences)} prompts, "
                f"{total} tokens: pass a smaller batch_size, or load_llm(..., backend='torch')"
            )
        return [np.stack([self._row(i, vocab) for i in positions]) for positions in read]

    def _row(self, i: int, vocab: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(vocab,)).copy()

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None


def _free(scoring: _ScoringContext, llama: Any) -> None:
    """The scoring context, then the model it was made from."""
    scoring.close()
    llama.close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def _file_type(llama: Any) -> str:
    """The GGUF's weight type as its name says it (``general.file_type`` as llama.cpp describes it)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(llama.model, buffer, len(buffer))
    described = buffer.value.decode(errors="replace").split()  # e.g. "gemma3 270M Q4_K - Medium"
    return " ".join(described[2:]) or Path(llama.model_path).stem
