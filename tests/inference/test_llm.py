"""The causal-LM family on real models: SmolLM2-135M-Instruct from its GGUF file, in this process
and behind llama.cpp's OpenAI-compatible server."""

import math

import pytest
import torch

from rag_rerank.inference.llm import load_llm
from rag_rerank.inference.llm.openai_server import OpenAIServerLLM, ScoringUnsupported
from rag_rerank.inference.llm.sources import LLMNotFoundError, resolve_llm
from rag_rerank.inference.llm.transformers_lm import TransformersLM

DOCS = [
    "The boundary layer on a flat plate thickens downstream as the flow slows near the wall.",
    "Paris is the capital of France.",
    "Heat transfer at hypersonic speeds depends on the stagnation temperature of the flow, which rises with Mach.",
]
QUERY = " How does the boundary layer grow along a plate?"
PROMPT = "Passage: {}\n\nQuery: {}\n\nDoes the passage answer the query? Answer Yes or No.\nAnswer:"


def plain_logprob(lm: TransformersLM, context: str, continuation: str) -> float:
    """transformers' plain path: the whole output layer at every position, one pair at a time."""
    head, tail = lm._with_bos(lm.tokens(context)), lm.tokens(continuation)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([head + tail])).logits[0].float().log_softmax(-1)
    return sum(float(logits[len(head) - 1 + i, t]) for i, t in enumerate(tail))


def test_batched_scores_are_the_plain_path(small_llm):
    """Left-padded batches, the output layer only on the query's positions: the same numbers as one
    pair at a time through the whole model."""
    batched = small_llm.continuation_logprobs(DOCS, QUERY)
    assert batched == pytest.approx([plain_logprob(small_llm, d, QUERY) for d in DOCS], abs=2e-3)
    assert all(math.isfinite(s) and s < 0 for s in batched)
    assert batched[0] > batched[1]  # the boundary-layer passage makes the boundary-layer question likelier


def test_order_and_batch_size_do_not_change_scores(small_llm):
    one = TransformersLM("smollm2-135m-instruct", dtype="float32", batch_size=1)
    assert one.continuation_logprobs(DOCS[::-1], QUERY) == pytest.approx(
        small_llm.continuation_logprobs(DOCS, QUERY)[::-1], abs=2e-3
    )


def test_labels(small_llm):
    rows = small_llm.label_logprobs([PROMPT.format(d, QUERY) for d in DOCS], ["yes", "no"])
    assert len(rows) == 3 and all(len(r) == 2 and all(math.isfinite(v) and v < 0 for v in r) for r in rows)
    assert rows[0][0] - rows[0][1] > rows[1][0] - rows[1][1]
    with pytest.raises(ValueError, match="distinct first tokens"):
        small_llm.label_logprobs(["x"], ["yes", "Yes"])


def test_complete_answers_in_text(small_llm):
    answer = small_llm.complete("What is the capital of France? Answer in one word.")
    assert "paris" in answer.lower()


def test_bfloat16_ranks_as_float32():
    fast = TransformersLM("smollm2-135m-instruct", dtype="bfloat16")
    exact = TransformersLM("smollm2-135m-instruct", dtype="float32")
    a, b = fast.continuation_logprobs(DOCS, QUERY), exact.continuation_logprobs(DOCS, QUERY)
    assert sorted(range(3), key=a.__getitem__) == sorted(range(3), key=b.__getitem__)


def test_gguf_is_unpacked_once(small_llm):
    assert resolve_llm("smollm2-135m-instruct").folder == small_llm.source.folder
    assert (resolve_llm("smollm2-135m-instruct").folder + "/config.json").endswith("config.json")


@pytest.mark.parametrize(
    "model,message",
    [
        ("/nowhere/model.gguf", "no GGUF file"),
        ("./no-such-folder", "no model at"),
        ("no-such-org/no-such-model", "is not a causal LM transformers can load"),
    ],
)
def test_bad_models_are_named(model, message):
    with pytest.raises(LLMNotFoundError, match=message):
        TransformersLM(model)


def test_a_file_that_is_no_gguf(tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    with pytest.raises(LLMNotFoundError, match="not a causal LM"):
        TransformersLM(str(fake))


def test_a_cross_encoder_is_no_causal_lm(tiny_cross_encoder_path):
    with pytest.raises(LLMNotFoundError, match="is not a causal LM"):
        TransformersLM(tiny_cross_encoder_path)


def test_llama_cpp_server_labels_and_text(llama_server, small_llm):
    """llama.cpp's server on the same file: chat top_logprobs give the yes/no log-odds with the local
    model's sign (its own Q4_1 kernels against transformers' dequantised float32), and text."""
    server = load_llm(llama_server)
    assert isinstance(server, OpenAIServerLLM) and server.model_name == "smollm2-135m-instruct"
    prompts = [PROMPT.format(d, QUERY) for d in DOCS[:2]]
    remote = [yes - no for yes, no in server.label_logprobs(prompts, ["yes", "no"])]
    local = [yes - no for yes, no in small_llm.label_logprobs(prompts, ["yes", "no"])]
    assert all(math.isfinite(v) for v in remote)
    assert remote[0] > remote[1] and local[0] > local[1]
    assert "paris" in server.complete("What is the capital of France? Answer in one word.").lower()


def test_llama_cpp_server_echo_is_refused_by_name(llama_server):
    """llama-cpp-python's server echoes prompt log-probabilities one position late: the query
    likelihood is refused before any score, naming the bug, rather than read wrong."""
    server = OpenAIServerLLM(llama_server)
    with pytest.raises(ScoringUnsupported, match="one position late"):
        server.continuation_logprobs(DOCS, QUERY)


def test_server_without_logprobs_is_refused_before_scoring(openai_server):
    """A chat-only endpoint (no /v1/completions echo): a clear error on the first call, naming what it lacks."""
    server = OpenAIServerLLM(openai_server.base_url, model="stub")
    with pytest.raises(ScoringUnsupported, match="completions is not served"):
        server.continuation_logprobs(DOCS, QUERY)
    with pytest.raises(ScoringUnsupported, match="top_logprobs"):
        server.label_logprobs(["Is it?"], ["yes", "no"])


def test_a_model_read_right_passes_the_echo_check(small_llm):
    """The threshold that refuses a shifted server lets a right reading through: SmolLM2 in this process
    gives the counting prompt's last tokens a mean log-probability above it."""
    from rag_rerank.inference.llm.openai_server import ALIGNED_AT_LEAST

    tail = " 11, 12, 13, 14, 15,"
    mean = small_llm.continuation_logprobs(["1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"], tail)[0] / len(small_llm.tokens(tail))
    assert mean > ALIGNED_AT_LEAST + 2


def test_auto_keeps_bfloat16_only_where_it_ranks_as_float32(monkeypatch):
    """auto on a CPU that multiplies bfloat16 fast: bfloat16 after the calibration check (saved as a
    verdict); a verdict that says it ranks unlike float32 makes float32 run."""
    import json

    from rag_rerank.inference import cpu
    from rag_rerank.inference.cache import cache_root

    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: 3.0)  # the check runs whatever this CPU is
    assert TransformersLM("smollm2-135m-instruct", dtype="auto").dtype == "bfloat16"
    (verdict,) = [p for p in (cache_root() / "verdicts").glob("llm-*/bfloat16-*.json")]
    saved = json.loads(verdict.read_text())
    assert saved["kendall_tau"] > 0.8
    verdict.write_text(json.dumps({**saved, "kendall_tau": 0.1}))
    assert TransformersLM("smollm2-135m-instruct", dtype="auto").dtype == "float32"


def test_a_server_that_does_not_answer_in_time_is_busy_and_one_that_refuses_is_an_error(openai_server):
    """The client's own errors, as the rerankers sort them: a read timeout is ServerBusy (a later request
    may pass: that batch keeps its first-stage order), a refused connection is raised as it is."""
    import httpx

    from rag_rerank.inference.llm.openai_server import ServerBusy

    openai_server.delay = 2.0
    try:
        with pytest.raises(ServerBusy, match="ReadTimeout"):
            OpenAIServerLLM(openai_server.base_url, model="stub", timeout=0.5).complete("hello")
    finally:
        openai_server.delay = 0.0
    assert OpenAIServerLLM(openai_server.base_url, model="stub").complete("hello")  # answers again
    with pytest.raises(httpx.ConnectError):
        OpenAIServerLLM("http://127.0.0.1:9/v1", model="stub", timeout=2).complete("hello")
