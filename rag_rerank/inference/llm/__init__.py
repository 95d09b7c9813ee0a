"""Causal LMs, the third family beside ``cross_encoder/`` and ``embedder/``: what the LLM rerankers
and generation run on.

- ``sources``: which model a name means (the offline models, a GGUF file, a folder, a hub name);
- ``transformers_lm``: a model in this process through transformers;
- ``openai_server``: the same methods over an OpenAI-compatible server (vLLM, llama.cpp's, OpenAI).

Each offers ``complete`` (text), ``continuation_logprobs`` (log P(query | prompt with a document))
and ``label_logprobs`` (P("yes") against P("no")): ``rag_rerank.rerank.llm.protocol`` says what a
reranker needs of them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_rerank.inference.llm.openai_server import OpenAIServerLLM
    from rag_rerank.inference.llm.transformers_lm import TransformersLM


@functools.lru_cache(maxsize=2)  # the rerankers and the chain of one process share a loaded model
def load_llm(model: str | None = None, dtype: str = "auto") -> TransformersLM | OpenAIServerLLM:
    """The causal LM ``model`` names.

    Args:
        model: An ``http(s)://`` URL of an OpenAI-compatible server, a hub name, a folder, a ``.gguf``
            file, or an offline model (``gemma-3-270m``, ``smollm2-135m-instruct``); None for ``DEFAULT_LLM``.
        dtype: A local model's precision (``auto``, ``float32``, ``bfloat16``).

    Returns:
        ``OpenAIServerLLM`` for a URL, else ``TransformersLM``.
    """
    if model and model.startswith(("http://", "https://")):
        from rag_rerank.inference.llm.openai_server import OpenAIServerLLM

        return OpenAIServerLLM(model)
    from rag_rerank.inference.llm.transformers_lm import TransformersLM

    return TransformersLM(model, dtype=dtype)
