"""The parts of LLM reranking that need no LLM: window arithmetic, answer parsing, packing, comparison."""

import pytest

from rag_rerank import Document, JudgementCache, compare, pack_context
from rag_rerank.rerank.llm import parse_permutation, parse_rating, windows


@pytest.mark.parametrize(
    "n,window,step,expected",
    [
        (0, 20, 10, []),
        (1, 20, 10, []),
        (5, 20, 10, [(0, 5)]),  # fewer candidates than the window
        (20, 20, 10, [(0, 20)]),
        (30, 20, 10, [(10, 30), (0, 20)]),
        (100, 20, 10, [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]),
        (9, 3, 3, [(6, 9), (3, 6), (0, 3)]),  # window = step: disjoint windows
        (10, 4, 3, [(6, 10), (3, 7), (0, 4)]),
        (2, 2, 1, [(0, 2)]),
    ],
)
def test_windows(n, window, step, expected):
    spans = windows(n, window, step)
    assert spans == expected
    covered = {i for start, end in spans for i in range(start, end)}
    assert covered == set(range(n)) or n <= 1


@pytest.mark.parametrize(
    "answer,count,order,problem",
    [
        ("[3] > [1] > [2]", 3, [2, 0, 1], None),
        ("3 > 1 > 2", 3, [2, 0, 1], None),
        ("[2] > [2] > [9] > [1]", 3, [1, 0, 2], "out of range"),
        ("[2]", 3, [1, 0, 2], "not ranked"),
        ("I cannot help with that.", 3, [0, 1, 2], "no ids"),
        ("", 2, [0, 1], "no ids"),
    ],
)
def test_parse_permutation_always_returns_a_full_permutation(answer, count, order, problem):
    parsed, problems = parse_permutation(answer, count)
    assert parsed == order and sorted(parsed) == list(range(count))
    assert (problems is None) if problem is None else (problem in problems)


@pytest.mark.parametrize(
    "answer,value",
    [
        ("7", 7.0),
        ("Relevance: 8.5/10", 8.5),
        ("0", 0.0),
        ("11", None),
        ("-2", None),
        ("not relevant at all", None),
        ("Relevance (0-10): 7", 7.0),  # the prompt's own scale echoed back
        ("I would rate it 6 out of 10.", 6.0),
        ("On a scale of 0 to 10, this passage is a 9.", 9.0),
        ("Score: 8 (it names 3 of the terms)", 8.0),
        ("Rating = 4", 4.0),
    ],
)
def test_parse_rating(answer, value):
    assert parse_rating(answer)[0] == value


def test_pack_context_budget_numbering_and_edges():
    docs = [Document(f"passage number {i} " + "word " * 20, id=str(i)) for i in range(1, 7)]
    packed = pack_context(docs, max_tokens=80)
    assert packed.tokens <= 80 and packed.documents == docs[: len(packed.documents)]
    assert packed.text.startswith("[1] passage number 1") and len(packed.dropped) == 6 - len(packed.documents)
    edges = pack_context(docs, max_tokens=10_000, order="edges")
    assert edges.citations == [1, 3, 5, 6, 4, 2]  # best at both ends, weakest in the middle
    assert edges.text.startswith("[1] ") and edges.text.rstrip().split("\n\n")[-1].startswith("[2] ")
    # a long passage that does not fit is skipped, smaller ones after it still get in
    mixed = pack_context([docs[0], Document("long " * 500, id="long"), docs[1]], max_tokens=80)
    assert [d.id for d in mixed.documents] == ["1", "2"] and [d.id for d in mixed.dropped] == ["long"]
    with pytest.raises(ValueError, match="order"):
        pack_context(docs, order="middle")


def test_judgement_cache_persists(tmp_path):
    cache = JudgementCache(tmp_path / "cache.jsonl")
    cache.put("m", "prompt", "7")
    assert JudgementCache(tmp_path / "cache.jsonl").get("m", "prompt") == "7"
    assert JudgementCache(tmp_path / "cache.jsonl").get("other-model", "prompt") is None


def test_judgement_cache_survives_a_half_written_last_line(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    JudgementCache(path).put("m", "first", "7")
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"model": "m", "prompt": "second", "ans')  # the process died mid-write
    cache = JudgementCache(path)  # loads, keeps the whole line, says what it skipped
    assert cache.get("m", "first") == "7" and cache.get("m", "second") is None
    assert "skipped 1 damaged line" in caplog.text
    cache.put("m", "third", "5")  # starts on a new line instead of extending the damaged one
    reloaded = JudgementCache(path)
    assert (reloaded.get("m", "first"), reloaded.get("m", "third")) == ("7", "5")


def test_a_hung_llm_call_does_not_keep_the_interpreter_alive(tmp_path):
    """A timed-out call is abandoned in a daemon thread; the process exits instead of waiting."""
    import subprocess
    import sys

    script = (
        "import time\n"
        "from rag_rerank import Document, PointwiseLLMReranker\n"
        "class Hung:\n"
        "    model_name = 'hung'\n"
        "    def complete(self, prompt): time.sleep(600)\n"
        "    async def acomplete(self, prompt): time.sleep(600)\n"
        "result = PointwiseLLMReranker(Hung(), timeout=0.2).rerank_with_report('q', [Document('a', id='a')])\n"
        "print(result.fallbacks)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "timed out after 0.2s" in done.stdout


def test_compare_cross_encoder_with_no_rerank(cranfield, cranfield_store, tiny_reranker):
    from rag_rerank.evaluation.compare import first_stage_candidates

    queries = {q: cranfield.queries[q] for q in ["1", "2", "3"]}
    candidates = first_stage_candidates(cranfield_store, queries, depth=10)
    report = compare(queries, candidates, {"tiny": tiny_reranker}, qrels=cranfield.qrels, k=5, show_progress=False)
    assert [run.name for run in report.systems] == ["no rerank", "tiny"]
    assert report.systems[0].orders["1"] == [d.id for d in candidates["1"]]
    assert sorted(report.systems[1].orders["1"]) == sorted(report.systems[0].orders["1"])
    agreement = report.agreement()[0]
    from scipy.stats import kendalltau

    taus = []
    for q in queries:  # the same figure computed independently: positions of each id in both orders
        first, second = report.systems[0].orders[q], report.systems[1].orders[q]
        taus.append(kendalltau(list(range(len(first))), [second.index(d) for d in first]).statistic)
    assert agreement["systems"] == "no rerank vs tiny"
    assert agreement["Kendall tau"] == pytest.approx(sum(taus) / len(taus), abs=1e-3)
    assert set(report.metrics) == {"no rerank", "tiny"}
    assert "| no rerank |" in report.to_markdown()
    (difference,) = report.differences()  # paired over the judged queries
    assert (difference.system, difference.baseline, difference.queries) == ("tiny", "no rerank", 3)
    assert difference.mean == pytest.approx(report.metrics["tiny"]["nDCG@10"] - report.metrics["no rerank"]["nDCG@10"])
    assert f"tiny vs no rerank, nDCG@10: {difference.label()}" in report.to_markdown()
    assert len(report.side_by_side("1", top=3)) == 3


def test_one_string_for_a_list_is_refused_before_any_llm_call():
    from rag_rerank import PointwiseLLMReranker

    class Counting:
        model_name = "counting"
        calls = 0

        def complete(self, prompt):
            Counting.calls += 1
            return "5"

        async def acomplete(self, prompt):
            return self.complete(prompt)

    with pytest.raises(TypeError, match="documents must be a list, got one str"):
        PointwiseLLMReranker(Counting()).rerank("q", "one passage")
    assert Counting.calls == 0
