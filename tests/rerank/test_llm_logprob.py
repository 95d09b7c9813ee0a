"""The rerankers that read probabilities (query likelihood, yes/no) on a real LLM (SmolLM2-135M-Instruct
in this process) and real Cranfield candidates: every document back with a finite score, the cache,
the deadline (in this process and over a slow server), truncation marked, fusion's ends, and what an
LLM without probabilities gets."""

import math
import time

import pytest
from server_helpers import CompletionsStub

from rag_rerank import Document
from rag_rerank.document import TRUNCATED_BY
from rag_rerank.inference.llm.openai_server import OpenAIServerLLM
from rag_rerank.rerank.llm import (
    JudgementCache,
    QueryLikelihoodReranker,
    ScoringUnsupported,
    YesNoLLMReranker,
)
from rag_rerank.rerank.llm.kinds import llm_reranker, parse_spec, system_name

QUERY = "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"


@pytest.fixture(scope="module")
def candidates(cranfield):
    """Eight real abstracts with descending first-stage scores, two of them long."""
    docs = [doc for doc in cranfield.corpus if doc.text.strip()][:8]
    return [Document(d.text, {"source": d.id}, d.id, 1.0 - i / 10, "fused") for i, d in enumerate(docs)]


@pytest.mark.parametrize("make", [QueryLikelihoodReranker, YesNoLLMReranker])
def test_every_document_back_with_a_finite_score(make, small_llm, candidates):
    result = make(small_llm, batch_size=3).rerank_with_report(QUERY, candidates)
    assert sorted(d.id for d in result.documents) == sorted(d.id for d in candidates)
    assert all(d.score is not None and math.isfinite(d.score) for d in result.documents)
    scores = [d.score for d in result.documents]
    assert scores == sorted(scores, reverse=True)
    assert not result.fallbacks and len(result.calls) == len(candidates) and result.prompt_tokens > 0


def test_fusion_weight_ends(small_llm, candidates):
    """Weight 0 is the first stage's order; weight 1 is the LLM's log-likelihood order."""
    first = QueryLikelihoodReranker(small_llm, weight=0.0).rerank(QUERY, candidates)
    assert [d.id for d in first] == [d.id for d in candidates]
    alone = QueryLikelihoodReranker(small_llm, weight=1.0)
    prompts = [p.rstrip() for p in alone.prompts(QUERY, candidates)]
    logprobs = small_llm.continuation_logprobs(prompts, " " + QUERY)
    by_llm = [candidates[i].id for i in sorted(range(len(candidates)), key=lambda i: -logprobs[i])]
    assert [d.id for d in alone.rerank(QUERY, candidates)] == by_llm


def test_plain_strings_fuse_by_position(small_llm, candidates):
    ranked = QueryLikelihoodReranker(small_llm, weight=0.0).rerank(QUERY, [d.text for d in candidates])
    assert [d.text for d in ranked] == [d.text for d in candidates]


def test_cache_answers_the_second_time(small_llm, candidates, tmp_path):
    path = tmp_path / "scores.jsonl"
    once = QueryLikelihoodReranker(small_llm, cache=JudgementCache(path)).rerank_with_report(QUERY, candidates)
    again = QueryLikelihoodReranker(small_llm, cache=JudgementCache(path)).rerank_with_report(QUERY, candidates)
    assert all(call.cached for call in again.calls) and not any(call.cached for call in once.calls)
    assert [(d.id, d.score) for d in again.documents] == [(d.id, d.score) for d in once.documents]


def test_deadline_keeps_first_stage_order_for_the_rest(small_llm, candidates):
    result = YesNoLLMReranker(small_llm, timeout=0.0, batch_size=2).rerank_with_report(QUERY, candidates)
    assert [d.id for d in result.documents] == [d.id for d in candidates]
    assert result.fallbacks and "not scored within 0.0s" in result.fallbacks[0]
    assert all(math.isfinite(d.score) for d in result.documents)


def test_long_passages_are_cut_and_marked(small_llm, candidates):
    ranked = QueryLikelihoodReranker(small_llm, max_passage_tokens=20).rerank(QUERY, candidates)
    assert all(TRUNCATED_BY in d.metadata for d in ranked if len(d.text.split()) > 20)


def test_deadline_bounds_a_slow_servers_requests(candidates):
    """A server that stops answering mid-query: the rerank returns at its timeout, not after the client's
    120 s per request; the batch cut short and the ones never sent keep their first-stage order, and the
    report says why."""
    with CompletionsStub() as stub:
        stub.prompt_answers, stub.delay = 2, 30.0  # the echo check and the first batch answered, then silence
        reranker = QueryLikelihoodReranker(OpenAIServerLLM(stub.base_url), timeout=1.5, batch_size=2, weight=1.0)
        started = time.perf_counter()
        result = reranker.rerank_with_report(QUERY, candidates)
        took = time.perf_counter() - started
        assert len(stub.requests) == 3  # nothing sent once the deadline passed
    assert took < 1.5 + 1.0
    assert sorted(d.id for d in result.documents[:2]) == [d.id for d in candidates[:2]]
    assert [d.id for d in result.documents[2:]] == [d.id for d in candidates[2:]]  # first-stage order
    assert "documents [2, 3]: TimeoutError" in result.fallbacks[0] and "left of the deadline" in result.fallbacks[0]
    assert result.fallbacks[1] == "4 document(s) not scored within 1.5s; first-stage order"
    assert len(result.calls) == 2 and all(math.isfinite(d.score) for d in result.documents)


class BrokenBatch:
    """A scoring LLM whose second call fails with ``error``, as a server can mid-query (a test double of a failure)."""

    def __init__(self, llm, error):
        self.llm, self.model_name, self.calls, self.error = llm, "broken", 0, error

    def continuation_logprobs(self, contexts, continuation):
        self.calls += 1
        if self.calls == 2:
            raise self.error
        return self.llm.continuation_logprobs(contexts, continuation)

    def label_logprobs(self, prompts, labels):
        raise ScoringUnsupported("no top_logprobs")


def test_a_batch_that_failed_for_now_is_a_fallback_and_any_other_failure_an_error(small_llm, candidates):
    from rag_rerank.inference.llm.openai_server import ServerBusy
    from rag_rerank.inference.llm.shared import NonFiniteLogprob

    for passing in (ConnectionResetError("connection reset"), ServerBusy("503"), TimeoutError("read timed out")):
        result = QueryLikelihoodReranker(BrokenBatch(small_llm, passing), batch_size=3).rerank_with_report(
            QUERY, candidates
        )
        assert len(result.documents) == len(candidates) and type(passing).__name__ in result.fallbacks[0]
        assert [d.id for d in result.documents[-3:]] == [d.id for d in candidates[3:6]]  # unscored: first-stage order
    for lasting in (ConnectionRefusedError("refused"), NonFiniteLogprob("NaN"), MemoryError(), TypeError("no kwarg")):
        with pytest.raises(type(lasting)):
            QueryLikelihoodReranker(BrokenBatch(small_llm, lasting), batch_size=3).rerank(QUERY, candidates)
    with pytest.raises(ScoringUnsupported):
        YesNoLLMReranker(BrokenBatch(small_llm, None)).rerank(QUERY, candidates)


def test_an_llm_without_probabilities_is_refused(openai_server):
    class TextOnly:
        model_name = "text-only"

        def complete(self, prompt):
            return "yes"

        async def acomplete(self, prompt):
            return "yes"

    with pytest.raises(TypeError, match="gives no probabilities"):
        QueryLikelihoodReranker(TextOnly())


def test_kinds_by_name():
    assert parse_spec("query-likelihood") == ("query-likelihood", "gemma-3-270m")
    assert parse_spec("yes-no:http://localhost:8080/v1") == ("yes-no", "http://localhost:8080/v1")
    assert system_name("pointwise:my.gguf") == "LLM pointwise (my.gguf)"
    with pytest.raises(ValueError, match="unknown LLM reranker 'rating'"):
        parse_spec("rating:x")


def test_kind_builds_a_real_reranker(candidates):
    reranker = llm_reranker("yes-no:smollm2-135m-instruct")
    assert isinstance(reranker, YesNoLLMReranker)
    assert len(reranker.rerank(QUERY, candidates[:3])) == 3


async def test_async_rerank(small_llm, candidates):
    ranked = await QueryLikelihoodReranker(small_llm).arerank(QUERY, candidates[:4])
    assert sorted(d.id for d in ranked) == sorted(d.id for d in candidates[:4])
