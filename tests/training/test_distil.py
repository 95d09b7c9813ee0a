"""Distillation on a real corpus (ADI: 82 documents, 35 queries): the teacher's kept scores, the two
students trained on them by sentence-transformers' trainers, and the bad inputs refused before training."""

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import pytest

from rag_rerank import ChromaStore, CrossEncoderReranker, Document
from rag_rerank.data import Dataset, load_collection
from rag_rerank.models import SHIPPED_CROSS_ENCODER
from rag_rerank.retrieval.fusion import with_first_stage
from rag_rerank.training.distil import DISTILLED_FILE, Recipe, agreement, distil, fusion_weight, kendall_tau
from rag_rerank.training.queries import (
    TrainingQuery,
    collection_queries,
    first_question,
    generate_queries,
    read_queries,
    write_queries,
)
from rag_rerank.training.students import BiEncoderStudent, CrossEncoderStudent, TokenizerMismatch
from rag_rerank.training.teacher import (
    FUSED_FORMAT,
    Labelled,
    NonFiniteTeacherScore,
    TeacherScores,
    label,
    labelled,
    read_rows,
    recover_pure,
    teacher_provenance,
)

ADI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "adi"
DEPTH = 10


@pytest.fixture(scope="module")
def adi() -> Dataset:
    if not ADI.exists():
        pytest.skip(f"ADI not found at {ADI}")
    return load_collection(ADI, "test")


@pytest.fixture(scope="module")
def adi_store(adi, bi_encoder, tmp_path_factory) -> ChromaStore:
    store = ChromaStore("adi", path=tmp_path_factory.mktemp("adi-chroma"), bi_encoder=bi_encoder)
    store.ingest(adi.corpus)
    return store


@pytest.fixture(scope="module")
def shipped_teacher() -> CrossEncoderReranker:
    """The shipped cross-encoder's own logits (no first-stage prior), as ``make_teacher`` builds it."""
    return CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", first_stage_weight=0.0)


@pytest.fixture(scope="module")
def adi_scores(adi, adi_store, shipped_teacher, tmp_path_factory):
    """Every ADI query's top 10 scored by the shipped cross-encoder alone: a teacher whose order differs
    from the first stage's."""
    scores = TeacherScores(tmp_path_factory.mktemp("scores") / "adi.jsonl.gz", "cross-encoder", DEPTH)
    return label(collection_queries(adi), {"adi": adi_store}, lambda: shipped_teacher, scores, show_progress=False)


class Counting:
    """A real reranker that counts the candidates it is asked to score."""

    def __init__(self, reranker):
        self.reranker, self.scored = reranker, 0

    def rerank(self, query, documents):
        self.scored += len(documents)
        return self.reranker.rerank(query, documents)


def test_teacher_scores_are_kept_and_a_run_again_scores_nothing_twice(adi, adi_store, shipped_teacher, tmp_path):
    path = tmp_path / "scores.jsonl.gz"
    queries = collection_queries(adi)[:6]
    first = Counting(shipped_teacher)
    rows = label(queries[:4], {"adi": adi_store}, lambda: first, TeacherScores(path, "cross-encoder", DEPTH))
    assert first.scored == 4 * DEPTH and len(rows) == 4
    again = Counting(shipped_teacher)
    rows = label(queries, {"adi": adi_store}, lambda: again, TeacherScores(path, "cross-encoder", DEPTH))
    assert again.scored == 2 * DEPTH, "only the two queries not kept were scored"
    assert [row.query_id for row in rows] == [q.query_id for q in queries]
    kept = TeacherScores(path, "cross-encoder", DEPTH).rows
    assert len(kept) == 6 and all(len(row.teacher) == DEPTH for row in kept.values())
    with gzip.open(path, "rt") as handle:
        assert json.loads(handle.readline())["teacher"] == "cross-encoder"


def test_a_line_cut_short_is_scored_again_and_another_teacher_is_refused(adi, adi_store, shipped_teacher, tmp_path):
    path = tmp_path / "scores.jsonl"
    queries = collection_queries(adi)[:3]
    label(queries, {"adi": adi_store}, lambda: shipped_teacher, TeacherScores(path, "cross-encoder", DEPTH))
    path.write_text(path.read_text()[:-40])  # a crash in the middle of the last line
    assert len(TeacherScores(path, "cross-encoder", DEPTH).rows) == 2
    with pytest.raises(ValueError, match="scores of teacher 'cross-encoder', not 'yes-no'"):
        TeacherScores(path, "yes-no", DEPTH)
    with pytest.raises(ValueError, match="depth"):
        TeacherScores(path, "cross-encoder", DEPTH + 1)


def test_a_teacher_giving_non_finite_scores_is_refused_by_name(adi, adi_store, shipped_teacher, tmp_path):
    class Broken:
        def rerank(self, query, documents):
            return [doc.with_score(float("nan"), "logit") for doc in documents]

    path = tmp_path / "scores.jsonl"
    with pytest.raises(NonFiniteTeacherScore, match="finite score"):
        label(collection_queries(adi)[:2], {"adi": adi_store}, Broken, TeacherScores(path, "broken", DEPTH))
    assert not path.exists(), "nothing was kept from a teacher that gave NaN"
    candidates = adi_store.retrieve(adi.queries[next(iter(adi.queries))], DEPTH)
    good = labelled(TrainingQuery("adi", "1", "q"), candidates, shipped_teacher)
    bad = dataclasses.replace(good, query_id="2", teacher=(float("inf"),) + good.teacher[1:])
    with pytest.raises(NonFiniteTeacherScore, match=f"document {good.doc_ids[0]!r} for query '2'"):
        distil([good, bad, good], tmp_path / "student")
    assert not (tmp_path / "student").exists()


def test_a_teacher_fused_with_the_first_stage_is_refused_and_make_teacher_gives_its_own_scores(small_llm):
    from rag_rerank.rerank.llm.query_likelihood import QueryLikelihoodReranker
    from rag_rerank.training.teacher import make_teacher

    with pytest.raises(ValueError, match="fuses its scores with the first stage .weight 0.4."):
        teacher_provenance(QueryLikelihoodReranker(small_llm))
    with pytest.raises(ValueError, match="first_stage_weight"):
        teacher_provenance(CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu"))  # its learned prior
    own = make_teacher("cross-encoder:" + str(SHIPPED_CROSS_ENCODER))
    assert teacher_provenance(own)["model"] == str(SHIPPED_CROSS_ENCODER)
    llm = teacher_provenance(QueryLikelihoodReranker(small_llm, weight=1.0))
    assert llm["model"] == small_llm.cache_key and "{passage}" in llm["prompt"]


def test_a_bi_encoder_student_agrees_more_with_its_teacher_on_held_out_queries(adi_scores, tmp_path):
    recipe = Recipe(epochs=3, learning_rate=5e-5, dev_fraction=0.3, queries_per_step=2)
    out = distil(adi_scores, tmp_path / "bi", student="bi-encoder", recipe=recipe, bf16=False, show_progress=False)
    record = json.loads((out / DISTILLED_FILE).read_text())
    taus = [epoch["dev_kendall_tau"] for epoch in record["agreement"]]
    assert [epoch["epoch"] for epoch in record["agreement"]] == [0, 1, 2, 3]
    assert max(taus[1:]) > taus[0] + 0.02, taus
    assert len(record["dev_queries"]) == round(len(adi_scores) * 0.3)
    assert not set(map(tuple, record["dev_queries"])) & set(map(tuple, record["train_queries"]))
    assert "fusion" not in record, "a bi-encoder is a first stage: nothing to fuse it with"
    # what was saved is the best epoch, and loads as a bi-encoder
    dev = [row for row in adi_scores if [row.corpus, row.query_id] in record["dev_queries"]]
    saved = agreement(BiEncoderStudent(str(out), 320, "cpu"), dev)
    assert saved == pytest.approx(max(taus), abs=1e-3)


def test_a_cross_encoder_student_passes_the_first_stage_and_is_saved_as_its_best_epoch_with_its_fusion(
    adi, adi_scores, tmp_path
):
    """Started from the bi-encoder's weights with a fresh head, the student learns the teacher's own order
    beyond what the first stage agrees with it; the folder holds the best epoch's network and the fusion
    weight chosen with that network, and CrossEncoderReranker fuses with it as the LLM reranker does."""
    from rag_rerank.models import DEFAULT_BI_ENCODER

    judgements = {("adi", query_id): gains for query_id, gains in adi.qrels.items()}
    recipe = Recipe(epochs=3, learning_rate=1e-4, dev_fraction=0.35, queries_per_step=2, max_length=128)
    out = distil(
        adi_scores, tmp_path / "ce", base_model=DEFAULT_BI_ENCODER, recipe=recipe, judgements=judgements,
        bf16=False, show_progress=False,
    )  # fmt: skip
    record = json.loads((out / DISTILLED_FILE).read_text())
    taus = [epoch["dev_kendall_tau"] for epoch in record["agreement"]]
    dev = [row for row in adi_scores if [row.corpus, row.query_id] in record["dev_queries"]]
    train = [row for row in adi_scores if [row.corpus, row.query_id] in record["train_queries"]]
    bar = sum(kendall_tau(row.first_stage, row.teacher) for row in dev) / len(dev)
    assert record["first_stage_kendall_tau"] == pytest.approx(bar)
    assert max(taus) > bar, (taus, bar)
    loaded = CrossEncoderStudent(str(out), 128, "cpu")
    assert agreement(loaded, dev) == pytest.approx(max(taus), abs=1e-3), ("the best epoch was saved", taus)
    weight, chosen_on = fusion_weight(loaded, train, dev, judgements)
    assert record["fusion"] == {"weight": weight, "chosen_on": chosen_on}, "chosen with the saved network"
    assert chosen_on.startswith("nDCG@10") and "held-out" in chosen_on, chosen_on
    reranker = CrossEncoderReranker(str(out), device="cpu", backend="torch")
    assert reranker.fusion_weight == weight and reranker.first_stage_weight == 0.0
    # the weight was chosen on the scores the reranker fuses: its raw logits
    assert loaded.scores(dev[:1])[0] == pytest.approx(reranker.score(dev[0].query, list(dev[0].passages)), abs=1e-4)
    candidates = [
        Document(text, id=i, score=s) for text, i, s in zip(dev[0].passages, dev[0].doc_ids, dev[0].first_stage)
    ]
    ranked = reranker.rerank(dev[0].query, candidates)
    fused = with_first_stage(reranker.score(dev[0].query, list(dev[0].passages)), dev[0].first_stage, weight)
    assert {d.id: d.score for d in ranked} == pytest.approx(dict(zip(dev[0].doc_ids, fused)))
    assert {d.score_kind for d in ranked} == {"fused"}


def test_a_student_whose_tokenizer_is_not_its_own_is_refused_before_training(
    adi_scores, tmp_path, tiny_cross_encoder_path
):
    from transformers import AutoTokenizer

    from rag_rerank.inference.llm.sources import SMOLLM2, resolve_llm

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_cross_encoder_path, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    AutoTokenizer.from_pretrained(resolve_llm(SMOLLM2).folder).save_pretrained(folder)  # 49k tokens, not BERT's 30k
    with pytest.raises(TokenizerMismatch, match="tokenizer has 49152 tokens but its config"):
        distil(adi_scores, tmp_path / "out", base_model=str(folder), show_progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TokenizerMismatch):
        CrossEncoderStudent(str(folder), 64, "cpu")


def test_bad_input_is_refused_before_training(adi, adi_scores, tmp_path):
    with pytest.raises(ValueError, match="no teacher scores"):
        distil([], tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "model.safetensors").write_text("someone's model")
    with pytest.raises(ValueError, match="is not empty"):
        distil(adi_scores, tmp_path / "full")
    assert (tmp_path / "full" / "model.safetensors").read_text() == "someone's model"
    with pytest.raises(ValueError, match="student must be one of"):
        distil(adi_scores, tmp_path / "b", student="llm")
    with pytest.raises(ValueError, match="loss must be one of"):
        distil(adi_scores, tmp_path / "c", recipe=Recipe(loss="mse"))  # type: ignore[arg-type]
    empty = Dataset("empty", [], {})
    with pytest.raises(ValueError, match="corpus 'empty' is empty"):
        next(generate_queries(object(), empty, 5))  # type: ignore[arg-type]
    assert not any(p.name in {"a", "b", "c"} for p in tmp_path.iterdir())


def test_a_queries_file_naming_unknown_documents_is_refused_with_its_line(adi, tmp_path):
    path = write_queries(tmp_path / "q.jsonl", [TrainingQuery("adi", "g-1", "what is indexing?", adi.corpus[0].id)])
    assert read_queries(path, {"adi": adi}) == [TrainingQuery("adi", "g-1", "what is indexing?", adi.corpus[0].id)]
    write_queries(path, [TrainingQuery("adi", "g-2", "what is a thesaurus?", "no-such-document")])
    with pytest.raises(ValueError, match="line 2: document 'no-such-document' is not in the corpus 'adi'"):
        read_queries(path, {"adi": adi})
    with pytest.raises(ValueError, match="line 1: corpus 'adi' was not given"):
        read_queries(path, {})
    path.write_text('{"corpus": "adi", "text": "no id"}\n')
    with pytest.raises(ValueError, match="line 1: not a query"):
        read_queries(path, {"adi": adi})


def test_the_llm_writes_queries_for_a_corpus_with_where_they_came_from(adi, small_llm, tmp_path):
    queries = list(generate_queries(small_llm, adi, 2, seed=1, show_progress=False))
    assert 1 <= len(queries) <= 2
    ids = {doc.id for doc in adi.corpus}
    assert all(q.corpus == "adi" and q.written_for in ids and q.text.strip() for q in queries)
    path = write_queries(tmp_path / "q.jsonl", queries)
    assert read_queries(path, {"adi": adi}) == queries
    again = list(
        generate_queries(small_llm, adi, 2, seed=1, skip={q.written_for for q in queries}, show_progress=False)
    )
    assert not {q.written_for for q in again} & {q.written_for for q in queries}


def test_first_question_keeps_the_first_line_up_to_its_question_mark():
    assert first_question("\n What causes wing flutter? And why?\nmore") == "What causes wing flutter?"
    assert first_question("no question mark here") == "no question mark here"
    assert first_question("   ") == ""


def test_the_command_labels_once_then_trains_a_student_and_refuses_a_full_folder(
    tmp_path, capsys, tiny_cross_encoder_path, small_llm
):
    from rag_rerank.cli import main

    scores = tmp_path / "scores.jsonl.gz"
    common = ["distil", "--data", str(ADI), "--queries", "test", "--chroma-path", str(tmp_path / "chroma")]
    common += ["--teacher", "cross-encoder", "--depth", "5", "--scores", str(scores)]
    written = ["--generate-for", str(ADI), "--generate", "2", "--generator", "smollm2-135m-instruct"]
    assert main([*common, *written, "--label-only"]) == 0
    queries = read_queries(tmp_path / "generated-queries.jsonl", {"adi": load_collection(ADI, "test")})
    assert 1 <= len(queries) <= 2 and all(q.written_for for q in queries)
    assert f"{35 + len(queries)} labelled queries" in capsys.readouterr().out
    student = tmp_path / "student"
    train = ["--student", "cross-encoder", "--base-model", tiny_cross_encoder_path, "--epochs", "1"]
    assert main([*common, *train, "--output", str(student)]) == 0
    out = capsys.readouterr().out
    assert f"35 labelled queries ({35 + len(queries)} kept" in out, "nothing was scored again"
    record = json.loads((student / DISTILLED_FILE).read_text())
    assert record["teacher"]["teacher"] == "cross-encoder" and "--label-only" in record["teacher"]["command"]
    assert len(record["train_queries"]) + len(record["dev_queries"]) == 35
    assert main([*common, *train, "--output", str(student)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*common, "--teacher", "yes-no", "--label-only"]) == 2
    assert "keep one file per teacher" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main([*common, "--generate-for", str(tmp_path / "empty.jsonl"), "--label-only"]) == 2
    assert "the corpus" in capsys.readouterr().err and not (tmp_path / "chroma-empty").exists()


def test_an_llm_teacher_that_falls_back_to_the_first_stage_keeps_nothing(adi, adi_store, small_llm, tmp_path):
    from rag_rerank.rerank.llm.query_likelihood import QueryLikelihoodReranker
    from rag_rerank.training.teacher import TeacherFellBack

    hurried = QueryLikelihoodReranker(small_llm, weight=1.0, timeout=0.0)  # its deadline passes before any batch
    path = tmp_path / "scores.jsonl"
    with pytest.raises(TeacherFellBack, match="did not score every candidate of query"):
        label(collection_queries(adi)[:1], {"adi": adi_store}, lambda: hurried, TeacherScores(path, "qlm", DEPTH))
    assert not path.exists()


def test_a_sample_of_candidates_keeps_each_ones_first_stage_rank(adi_scores):
    import random

    from rag_rerank.training.distil import sampled

    row = adi_scores[0]
    part = sampled(row, 4, random.Random(0))
    assert len(part.passages) == 4 and part.ranks == tuple(sorted(part.ranks))
    assert [row.teacher[i] for i in part.ranks] == list(part.teacher)
    assert [row.passages[i] for i in part.ranks] == list(part.passages)
    assert sampled(row, None, random.Random(0)) is row


def _cut_short(path: Path, keep: float = 0.8) -> None:
    """What a run killed while writing leaves: the file's bytes up to some point in its last row."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_gzip_file_interrupted_twice_still_reads_every_whole_row(adi, adi_store, shipped_teacher, tmp_path):
    path = tmp_path / "scores.jsonl.gz"
    queries = collection_queries(adi)[:8]
    stores = {"adi": adi_store}
    label(
        queries[:4], stores, lambda: shipped_teacher, TeacherScores(path, "cross-encoder", DEPTH), show_progress=False
    )
    _cut_short(path, 0.97)  # into the last row's gzip member
    first = TeacherScores(path, "cross-encoder", DEPTH)
    assert 1 <= len(first.rows) < 4
    label(queries[:6], stores, lambda: shipped_teacher, first, show_progress=False)
    _cut_short(path, 0.97)  # again, after rows appended behind the first break
    second = TeacherScores(path, "cross-encoder", DEPTH)
    assert len(second.rows) >= 5, "the rows written after the first break are read"
    rows = label(queries, stores, lambda: shipped_teacher, second, show_progress=False)
    assert [row.query_id for row in rows] == [q.query_id for q in queries]
    header, kept = read_rows(path)
    assert len(kept) == 8 and header["provenance"]["model"] == str(SHIPPED_CROSS_ENCODER)


def test_a_gzip_file_another_version_appended_to_after_a_break_reads_up_to_it_and_is_repaired(
    adi, adi_store, shipped_teacher, tmp_path
):
    """What an older rag-rerank left after two interruptions: a gzip member cut short with more members
    appended behind it. What comes before the break reads; the next row rewrites the file whole."""
    path = tmp_path / "scores.jsonl.gz"
    queries = collection_queries(adi)[:5]
    stores = {"adi": adi_store}
    label(
        queries[:2], stores, lambda: shipped_teacher, TeacherScores(path, "cross-encoder", DEPTH), show_progress=False
    )
    cut = path.read_bytes()
    path.write_bytes(cut[:-30] + gzip.compress(b'{"corpus": "adi"}\n'))  # a member cut, another behind it
    scores = TeacherScores(path, "cross-encoder", DEPTH)
    assert len(scores.rows) == 1
    label(queries, stores, lambda: shipped_teacher, scores, show_progress=False)
    assert len(read_rows(path)[1]) == 5


def test_a_file_of_a_header_alone_gets_the_provenance_before_its_first_row(adi, adi_store, shipped_teacher, tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text(
        json.dumps({"format": "rag-rerank teacher scores 2", "teacher": "cross-encoder", "depth": DEPTH}) + "\n"
    )
    label(
        collection_queries(adi)[:1],
        {"adi": adi_store},
        lambda: shipped_teacher,
        TeacherScores(path, "cross-encoder", DEPTH),
    )
    header, rows = read_rows(path)
    assert len(rows) == 1 and header["provenance"]["model"] == str(SHIPPED_CROSS_ENCODER)
    label(
        collection_queries(adi)[:2],
        {"adi": adi_store},
        lambda: shipped_teacher,
        TeacherScores(path, "cross-encoder", DEPTH),
    )
    assert len(read_rows(path)[1]) == 2, "the same teacher goes on"


def test_rows_of_another_teacher_model_or_first_stage_are_refused_before_anything_is_scored(
    adi, adi_store, shipped_teacher, tiny_cross_encoder_path, tmp_path
):
    path = tmp_path / "scores.jsonl"
    queries = collection_queries(adi)[:3]
    label(queries[:2], {"adi": adi_store}, lambda: shipped_teacher, TeacherScores(path, "cross-encoder", DEPTH))
    other = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", allow_untrained_head=True)
    with pytest.raises(ValueError, match="holds another teacher's scores .provenance"):
        label(queries, {"adi": adi_store}, lambda: other, TeacherScores(path, "cross-encoder", DEPTH))
    assert len(TeacherScores(path, "cross-encoder", DEPTH).rows) == 2


def test_fused_scores_of_the_old_format_are_refused_and_recovered_as_the_teachers_own(adi_scores, tmp_path):
    old = tmp_path / "fused.jsonl"
    fused = [
        dataclasses.replace(row, teacher=tuple(with_first_stage(row.teacher, row.first_stage, 0.4)))
        for row in adi_scores[:5]
    ]
    lines = [{"format": FUSED_FORMAT, "teacher": "query-likelihood", "depth": DEPTH, "command": "old"}]
    lines += [{k: v for k, v in dataclasses.asdict(row).items() if k != "ranks"} for row in fused]
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match="first format.*recover_pure"):
        TeacherScores(old, "query-likelihood", DEPTH)
    new = recover_pure(old, tmp_path / "pure.jsonl.gz", {"provenance": {"model": "m"}})
    header, rows = read_rows(new)
    assert header["recovered_from"] == "fused.jsonl, fused at 0.4" and header["provenance"] == {"model": "m"}
    for row, original in zip(rows, adi_scores[:5]):
        low, high = min(original.teacher), max(original.teacher)
        assert row.teacher == pytest.approx([(t - low) / (high - low) for t in original.teacher])
    assert isinstance(rows[0], Labelled)
    lines[0]["teacher"] = "cross-encoder"  # its scores carried the learned prior: nothing to undo by a share
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match="first-stage prior, which cannot be removed"):
        recover_pure(old, tmp_path / "ce.jsonl", {})
    assert not (tmp_path / "ce.jsonl").exists()
