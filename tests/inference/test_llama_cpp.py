"""The GGUF file as shipped on llama.cpp, in this process (SmolLM2-135M-Instruct, Q4_1), against the same
file dequantised in torch float32; and auto's choice between the two."""

import json
import math

import pytest
from scipy.stats import kendalltau

from rag_rerank.inference.calibration import AGREEMENT
from rag_rerank.inference.llm import load_llm
from rag_rerank.inference.llm.sources import LLMNotFoundError

pytest.importorskip("llama_cpp")
from rag_rerank.inference.llm.llama_cpp import LlamaCppLM

SMOLLM2 = "smollm2-135m-instruct"
PROMPT = "Passage: {}\n\nQuery: {}\n\nDoes the passage answer the query? Answer Yes or No.\nAnswer:"


@pytest.fixture(scope="module")
def llama():
    lm = LlamaCppLM(SMOLLM2)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def passages(cranfield):
    return [doc.text for doc in cranfield.corpus if doc.text.strip()][:8]


def test_scores_are_torch_float32s_on_the_same_file(llama, small_llm, passages, cranfield):
    """Q4_1 kernels against the dequantised float32 model: the same log-likelihoods to within a
    fraction of a nat, and the same order of eight real abstracts."""
    query = " " + cranfield.queries["1"]
    fast, exact = llama.continuation_logprobs(passages, query), small_llm.continuation_logprobs(passages, query)
    assert all(math.isfinite(s) and s < 0 for s in fast)
    assert max(abs(a - b) for a, b in zip(fast, exact)) < 1.5
    assert kendalltau(fast, exact).statistic > AGREEMENT


def test_prompts_sharing_a_decode_do_not_see_each_other(llama, passages):
    """Eight prompts are decoded as eight sequences at once: each scores as it does alone or beside one other
    (to the kernels' rounding, which moves with the batch's shape by ~0.1 nat; a prompt that attended to
    another's tokens would move by nats)."""
    alone = LlamaCppLM(SMOLLM2, batch_size=1)
    pairs = LlamaCppLM(SMOLLM2, batch_size=2)  # other company in each decode than the batch of eight
    try:
        single = alone.continuation_logprobs(passages[:5], " wing")
        two = pairs.continuation_logprobs(passages[:5], " wing")
    finally:
        alone.close()
        pairs.close()
    assert llama.continuation_logprobs(passages[:5], " wing") == pytest.approx(single, abs=0.3)
    assert two == pytest.approx(single, abs=0.3)


def test_labels_and_text(llama, small_llm):
    docs = ["The boundary layer thickens downstream on a flat plate.", "Paris is the capital of France."]
    query = "How does the boundary layer grow along a plate?"
    rows = llama.label_logprobs([PROMPT.format(d, query) for d in docs], ["yes", "no"])
    torch_rows = small_llm.label_logprobs([PROMPT.format(d, query) for d in docs], ["yes", "no"])
    assert [v for row in rows for v in row] == pytest.approx([v for row in torch_rows for v in row], abs=0.5)
    with pytest.raises(ValueError, match="distinct first tokens"):
        llama.label_logprobs(["x"], ["yes", "Yes"])
    assert len(llama.complete("Name a colour. Answer in one word.").split()) >= 1


def test_a_prompt_longer_than_the_context_is_refused_by_name():
    small = LlamaCppLM(SMOLLM2, context=64, batch_size=2)
    try:
        with pytest.raises(ValueError, match="longer than the 64 .*max_passage_tokens"):
            small.continuation_logprobs(["wing " * 200], " lift")
    finally:
        small.close()


def test_only_gguf_files_run_on_llama_cpp(tiny_cross_encoder_path):
    with pytest.raises(LLMNotFoundError, match="neither a .gguf file nor an offline model"):
        LlamaCppLM(tiny_cross_encoder_path)
    with pytest.raises(ValueError, match="backend must be one of auto, torch, llama.cpp"):
        load_llm(SMOLLM2, backend="onnx")


def test_auto_runs_llama_cpp_only_where_it_ranks_as_float32_and_is_faster():
    """auto measures once (agreement with torch float32 on the calibration pairs, then speed) and saves
    both; edited verdicts decide the next load without measuring."""
    from rag_rerank.inference.cpu import identity
    from rag_rerank.inference.llm.auto import LLAMA_CPP_MUST_BE_FASTER, choose_llm, saved_choice
    from rag_rerank.inference.llm.sources import gguf_file

    choice = choose_llm(SMOLLM2, "cpu")
    assert choice.measured["kendall_tau"] >= AGREEMENT
    faster = choice.measured["llama_cpp_speedup"] >= LLAMA_CPP_MUST_BE_FASTER
    assert choice.backend == ("llama.cpp" if faster else "torch")
    assert saved_choice(SMOLLM2) == choice  # what doctor shows, read without loading anything
    load_llm.cache_clear()
    assert type(load_llm(SMOLLM2)).__name__ == ("LlamaCppLM" if faster else "TransformersLM")
    from rag_rerank.inference.cache import cache_root
    from rag_rerank.inference.llm.sources import file_key

    folder = cache_root() / "verdicts" / f"llm-{file_key(gguf_file(SMOLLM2)[1])}"
    speed, agreement = (folder / f"llama.cpp-{what}-{identity()}.json" for what in ("speedup", "agreement"))
    saved = speed.read_text(), agreement.read_text()
    try:
        speed.write_text(json.dumps({**json.loads(saved[0]), "speedup": 2.5}))
        assert choose_llm(SMOLLM2, "cpu").backend == "llama.cpp"
        agreement.write_text(json.dumps({**json.loads(saved[1]), "kendall_tau": 0.1}))  # faster, ranks unlike
        assert choose_llm(SMOLLM2, "cpu").backend == "torch"
    finally:
        speed.write_text(saved[0])
        agreement.write_text(saved[1])
    assert choose_llm(SMOLLM2, "cuda").backend == "torch"
    assert load_llm(SMOLLM2, dtype="float32").dtype == "float32"  # a torch precision means torch


def test_a_score_cache_never_answers_for_another_backend_or_precision(llama, small_llm, passages, tmp_path):
    """Cached scores are keyed by what moves them: the same model name on llama.cpp (Q4_1) and in torch
    float32 gets its own entries, and each backend finds its own the second time."""
    from rag_rerank.rerank.llm import JudgementCache, QueryLikelihoodReranker

    cache = JudgementCache(tmp_path / "scores.jsonl")
    for lm in (small_llm, llama):
        first = QueryLikelihoodReranker(lm, cache=cache).rerank_with_report("wing flutter", passages[:3])
        again = QueryLikelihoodReranker(lm, cache=cache).rerank_with_report("wing flutter", passages[:3])
        assert not any(call.cached for call in first.calls) and all(call.cached for call in again.calls)
    assert llama.cache_key != small_llm.cache_key and "Q4_1" in llama.cache_key and "float32" in small_llm.cache_key
