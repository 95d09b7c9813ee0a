"""Fusion arithmetic on hand-made rankings."""

import pytest

from rag_rerank.retrieval.fusion import normalise, rrf, weighted


def test_rrf_sums_reciprocal_ranks():
    fused = dict(rrf([[("a", 9.0), ("b", 5.0)], [("b", 0.9), ("c", 0.8)]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert [doc for doc, _ in rrf([[("a", 9.0), ("b", 5.0)], [("b", 0.9), ("c", 0.8)]])] == ["b", "a", "c"]


def test_rrf_ignores_score_scale_and_keeps_one_sided_documents():
    lexical = [("x", 1000.0), ("y", 999.0)]
    dense = [("z", 0.2)]
    fused = rrf([lexical, dense])
    assert {doc for doc, _ in fused} == {"x", "y", "z"}
    # x and z are both first on their side: a tie, broken by first appearance
    assert [doc for doc, _ in fused] == ["x", "z", "y"]


def test_ties_keep_first_seen_order():
    assert [doc for doc, _ in rrf([[("p", 1.0)], [("q", 1.0)], [("r", 1.0)]])] == ["p", "q", "r"]
    assert [doc for doc, _ in weighted([[("p", 1.0), ("q", 1.0)]], [1.0])] == ["p", "q"]


def test_more_requested_than_either_list_holds():
    fused = rrf([[("a", 1.0)], [("b", 1.0)]])
    assert len(fused[:100]) == 2


def test_weighted_fusion_of_normalised_scores():
    lexical = [("a", 12.0), ("b", 7.0), ("c", 2.0)]  # normalised: 1, 0.5, 0
    dense = [("c", 0.9), ("a", 0.5)]  # normalised: 1, 0
    fused = dict(weighted([dense, lexical], [0.7, 0.3]))
    assert fused["a"] == pytest.approx(0.7 * 0 + 0.3 * 1)
    assert fused["b"] == pytest.approx(0.3 * 0.5)  # not found by dense: 0 from it
    assert fused["c"] == pytest.approx(0.7 * 1 + 0.3 * 0)
    assert weighted([dense, lexical], [1.0, 0.0])[0][0] == "c"


def test_normalise_constant_and_empty():
    assert normalise([("a", 3.0), ("b", 3.0)]) == [("a", 1.0), ("b", 1.0)]
    assert normalise([]) == []


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        weighted([[("a", 1.0)], [("b", 1.0)]], [1.0])
    with pytest.raises(ValueError, match="not all 0"):
        weighted([[("a", 1.0)]], [0.0])
    with pytest.raises(ValueError, match="k must be"):
        rrf([], k=-1)


def test_a_rerankers_scores_fuse_with_the_first_stage_by_one_formula_unscored_ones_left_out():
    from rag_rerank.retrieval.fusion import with_first_stage

    own = [2.0, None, -1.0, 0.5]
    first = [0.9, 0.7, 0.5, 0.1]  # retrieval scores, best first
    fused = with_first_stage(own, first, 0.25)
    llm = [1.0, None, 0.0, 0.5]  # own, min-max scaled over the scored ones
    stage = [1.0, 0.75, 0.5, 0.0]  # first, min-max scaled
    assert fused[1] is None
    assert fused[0] == pytest.approx(0.25 * llm[0] + 0.75 * stage[0])
    assert fused[2] == pytest.approx(0.75 * 0.5) and fused[3] == pytest.approx(0.25 * 0.5)
    by_position = with_first_stage([1.0, 3.0], [None, None], 0.5)  # plain strings: ranked by position
    assert by_position == pytest.approx([0.5 * 0.0 + 0.5 * 1.0, 0.5 * 1.0 + 0.5 * 0.5])
    with pytest.raises(ValueError, match="between 0 and 1"):
        with_first_stage([1.0], [1.0], 1.5)
    with pytest.raises(ValueError, match="2 scores for 1 candidates"):
        with_first_stage([1.0, 2.0], [1.0], 0.5)
