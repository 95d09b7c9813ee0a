"""The LLM rerankers by name, as ``rag-rerank eval --llm-reranker KIND[:MODEL]`` and ``compare`` take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rag_rerank.inference.llm.sources import DEFAULT_LLM, SMOLLM2
from rag_rerank.rerank.llm.base import LLMReranker
from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.listwise import ListwiseLLMReranker
from rag_rerank.rerank.llm.pointwise import PointwiseLLMReranker
from rag_rerank.rerank.llm.query_likelihood import QueryLikelihoodReranker
from rag_rerank.rerank.llm.yes_no import YesNoLLMReranker

# kind -> (reranker, its offline model): query likelihood reads a base model best, the others
# follow instructions
KINDS: dict[str, tuple[Callable[..., LLMReranker], str]] = {
    "query-likelihood": (QueryLikelihoodReranker, DEFAULT_LLM),
    "yes-no": (YesNoLLMReranker, SMOLLM2),
    "pointwise": (PointwiseLLMReranker, SMOLLM2),
    "listwise": (ListwiseLLMReranker, SMOLLM2),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """``KIND[:MODEL]`` as (kind, model); the model may itself hold colons (a URL)."""
    kind, _, model = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown LLM reranker {kind!r} in {spec!r}; one of {', '.join(KINDS)}")
    return kind, model or KINDS[kind][1]


def llm_reranker(
    spec: str, *, cache: JudgementCache | None = None, timeout: float | None = None, **options: Any
) -> LLMReranker:
    """The LLM reranker ``spec`` names (``query-likelihood``, ``yes-no:smollm2-135m-instruct``,
    ``pointwise:http://localhost:8080/v1``...), its model loaded once per process.

    Args:
        spec: ``KIND[:MODEL]``; MODEL a name, a folder, a ``.gguf`` file or a server URL (default: the
            kind's offline model).
        cache: Keep the LLM's answers or scores.
        timeout: Seconds per call (pointwise, listwise) or per rerank (query likelihood, yes/no); None: no limit.
        options: What the kind's reranker takes besides (``weight=1.0``: query likelihood alone).
    """
    from rag_rerank.inference.llm import load_llm

    kind, model = parse_spec(spec)
    maker, _ = KINDS[kind]
    return maker(load_llm(model), cache=cache, timeout=timeout, **options)


def system_name(spec: str) -> str:
    """The row name of ``spec`` in a report: its kind and model."""
    kind, model = parse_spec(spec)
    return f"LLM {kind} ({model})"
