"""Causal LMs, the third family beside ``cross_encoder/`` and ``embedder/``: what the LLM rerankers
and generation run on.

- ``sources``: which model a name means (the offline models, a GGUF file, a folder, a hub name);
- ``transformers_lm``: a model in this process through transformers;
- ``llama_cpp``: a GGUF file in this process through llama.cpp, on the CPU's quantised kernels;
- ``auto``: which of the two a GGUF model runs on here (measured once);
- ``openai_server``: the same methods over an OpenAI-compatible server (vLLM, llama.cpp's, OpenAI).

Each offers ``complete`` (text), ``continuation_logprobs`` (log P(query | prompt with a document))
and ``label_logprobs`` (P("yes") against P("no")): ``rag_rerank.rerank.llm.protocol`` says what a
reranker needs of them.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_rerank.inference.llm.llama_cpp import LlamaCppLM
    from rag_rerank.inference.llm.openai_server import OpenAIServerLLM
    from rag_rerank.inference.llm.transformers_lm import TransformersLM

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)  # the rerankers and the chain of one process share a loaded model
def load_llm(
    model: str | None = None, dtype: str = "auto", backend: str = "auto"
) -> TransformersLM | LlamaCppLM | OpenAIServerLLM:
    """The causal LM ``model`` names.

    Args:
        model: An ``http(s)://`` URL of an OpenAI-compatible server, a hub name, a folder, a ``.gguf``
            file, or an offline model (``gemma-3-270m``, ``smollm2-135m-instruct``); None for ``DEFAULT_LLM``.
        dtype: A torch model's precision (``auto``, ``float32``, ``bfloat16``); one other than ``auto``
            means torch.
        backend: ``auto`` (a GGUF model on a CPU: llama.cpp or torch, whichever ``auto.choose_llm``
            measures faster while ranking as float32 does), ``torch`` or ``llama.cpp``.

    Returns:
        ``OpenAIServerLLM`` for a URL, else ``LlamaCppLM`` or ``TransformersLM``.

    Raises:
        ValueError: an unknown backend.
    """
    if model and model.startswith(("http://", "https://")):
        from rag_rerank.inference.llm.openai_server import OpenAIServerLLM

        return OpenAIServerLLM(model)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto" and dtype == "auto":
        from rag_rerank.inference.llm.auto import choose_llm
        from rag_rerank.models import default_device

        choice = choose_llm(model, default_device())
        log.info("LLM backend='auto': %s (%s)", choice.backend, choice.why)
        backend = choice.backend
    if backend == "llama.cpp":
        from rag_rerank.inference.llm.llama_cpp import LlamaCppLM

        return LlamaCppLM(model)
    from rag_rerank.inference.llm.transformers_lm import TransformersLM

    return TransformersLM(model, dtype=dtype)


BACKENDS = ("auto", "torch", "llama.cpp")
