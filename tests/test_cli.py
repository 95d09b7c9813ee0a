"""The command line end to end, on real Chroma folders and small real collections."""

import json
import re
import shutil

import pytest

from rag_rerank.cli import main


def beir_folder(root, name, docs, queries, qrels):
    folder = root / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs)
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    rows = "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


@pytest.fixture
def two_collections(tmp_path):
    first = beir_folder(
        tmp_path,
        "wings",
        [
            ("w1", "Lift of a swept wing at high angle of attack."),
            ("w2", "Heat conduction in steel slabs."),
            ("w3", "Flutter of wing panels in supersonic flow."),
        ],
        [("q1", "swept wing lift"), ("q2", "panel flutter")],
        [("q1", "w1"), ("q2", "w3")],
    )
    second = beir_folder(
        tmp_path,
        "shells",
        [("s1", "Buckling of cylindrical shells under compression."), ("s2", "Creep of metals at high temperature.")],
        [("q1", "shell buckling")],
        [("q1", "s1")],
    )
    return first, second


def test_eval_over_several_collections_prints_a_table_each_and_a_mean(two_collections, tmp_path, capsys):
    first, second = two_collections
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--data",
            str(first),
            "--data",
            str(second),
            "--chroma-path",
            str(tmp_path / "c"),
            "--output",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "wings: 2 queries (test)" in printed and "shells: 1 queries (test)" in printed
    assert "mean nDCG@10" in printed and "| hybrid (weighted) |" in printed
    assert (out / "wings" / "results.json").exists() and (out / "shells" / "results.md").exists()
    summary = (out / "summary.md").read_text()
    assert len(summary.splitlines()) == 2 + 3  # header, rule, BM25 / dense / hybrid


def test_eval_compares_backends_row_by_row(two_collections, tmp_path, capsys, tiny_cross_encoder_path):
    first, _ = two_collections
    chroma = str(tmp_path / "c")
    options = ["--data", str(first), "--chroma-path", chroma, "--cross-encoder", tiny_cross_encoder_path]
    code = main(["eval", *options, "--backend", "torch", "--backend", "sentence-transformers", "--output", chroma])
    assert code == 0
    rows = {row["system"]: row for row in json.loads((tmp_path / "c" / "results.json").read_text())["results"]}
    name = tiny_cross_encoder_path.rstrip("/").split("/")[-1]
    torch_row, reference_row = (
        rows[f"hybrid + cross-encoder ({name}, torch)"],
        rows[f"hybrid + cross-encoder ({name}, sentence-transformers)"],
    )
    assert torch_row["nDCG@10"] == reference_row["nDCG@10"]  # exact backends rank alike
    with pytest.raises(SystemExit):
        main(["eval", *options, "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_query_prints_each_document_once(two_collections, tmp_path, capsys):
    first, _ = two_collections
    chroma = str(tmp_path / "c")
    ingest = ["ingest", str(first / "corpus.jsonl"), "--collection", "wings", "--chroma-path", chroma]
    assert main(ingest) == 0
    assert "ingested 3 documents" in capsys.readouterr().out
    assert main(ingest) == 0  # again: nothing changed, nothing re-embedded, and it says so
    assert "3 documents unchanged since the last ingest, skipped" in capsys.readouterr().out
    assert (
        main(["query", "wing flutter", "--collection", "wings", "--chroma-path", chroma, "--no-rerank", "--json"]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [hit["id"] for hit in lines][:1] == ["w3"] and len({hit["id"] for hit in lines}) == len(lines) == 3


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "nowhere"), "--chroma-path", str(tmp_path / "c")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_demo_shows_both_stages_with_judged_marks_and_measures_them(
    two_collections, tmp_path, capsys, tiny_cross_encoder_path
):
    first, _ = two_collections
    chroma = str(tmp_path / "c")
    code = main(["demo", "--data", str(first), "--chroma-path", chroma, "--cross-encoder", tiny_cross_encoder_path])
    printed = capsys.readouterr().out
    assert code == 0
    assert "query q1: swept wing lift" in printed and "query q2: panel flutter" in printed
    assert "[*] w1" in printed and "reranked (3 pairs" in printed
    assert "Both stages on all 2 test queries" in printed and "| hybrid (weighted) |" in printed
    assert "| hybrid + reranker |" in printed and "nDCG@10 on held-out queries" in printed
    if "LLM: NOT LOADED" not in printed:  # rag-rerank[local-llm] is installed with the test extras
        # the offline SmolLM2's answer: sentences, or a plain statement that it could not answer (never
        # an empty arrow nor a bare "The answer is:")
        answer = printed.split("\n  -> ", 1)[1].split("\n", 1)[0]
        assert "could not answer from these sources" in answer or (
            len(re.findall(r"[^\W\d_]{2,}", answer)) >= 3 and not answer.endswith(":")
        ), answer


def test_the_demo_says_its_notes_as_text_not_as_python_warnings(
    two_collections, tmp_path, capsys, recwarn, tiny_cross_encoder_path
):
    """The memorisation note of a model trained on the collection is a line of the demo's output, once."""
    first, _ = two_collections
    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder_path, model)
    (model / "trained_on.json").write_text(json.dumps({"wings": {"train": {"t1": ["w1"]}}}))  # q1's relevant one
    argv = ["demo", "--data", str(first), "--chroma-path", str(tmp_path / "c"), "--cross-encoder", str(model)]
    assert main([*argv, "--llm", "none", "--llm-queries", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Note: wings: the test split shares 1 of its 2 relevant documents") == 1
    assert not [w for w in recwarn if "shares" in str(w.message)]


def test_the_demo_shows_an_answer_once_each_sentence_and_never_a_bare_preamble():
    """What SmolLM2-135M writes when it has nothing to say, and when it repeats itself until its limit."""
    from rag_rerank.demo import tidy, usable

    assert not usable(tidy("The answer is:")) and not usable(tidy("1. 1. 1. 2. 3. 4.")) and not usable("")
    looped = "It helps [1]. They also mention X. They also mention X. They also mention X. They also"
    assert tidy(looped) == "It helps [1]. They also mention X." and usable(tidy(looped))


def test_eval_of_a_trained_model_reports_the_queries_whose_documents_it_never_saw(
    two_collections, tmp_path, capsys, tiny_cross_encoder_path
):
    """--trained-on: the test split's overlap with the training data is said, and the queries whose
    relevant documents were never relevant in training get a table of their own."""
    first, _ = two_collections
    train = tmp_path / "train.tsv"
    train.write_text("query-id\tcorpus-id\tscore\nt1\tw1\t1\n")  # w1 is q1's relevant document; q2's is w3
    out = tmp_path / "out"
    argv = ["eval", "--data", str(first), "--chroma-path", str(tmp_path / "c"), "--output", str(out)]
    code = main([*argv, "--cross-encoder", tiny_cross_encoder_path, "--trained-on", f"wings={train}"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "On the 1 queries whose relevant documents were never relevant in training" in printed
    assert "shares 1 of its 2 relevant documents with the training data" in printed
    assert "nDCG@10 vs hybrid (weighted)" in printed
    saved = json.loads((out / "results.json").read_text())
    assert next(iter(saved["subsets"].values()))["queries"] == ["q2"]


def test_doctor_says_what_auto_runs_here_and_writes_a_pin_that_runs_it_again(
    tmp_path, capsys, monkeypatch, tiny_cross_encoder_path
):
    """rag-rerank doctor: this CPU, the runtimes, each encoder's plan and why; --write pins those
    plans, and a process reading the pin runs the same paths."""
    from rag_rerank import BiEncoder, CrossEncoderReranker

    pins = tmp_path / "plan.json"
    assert main(["doctor", "--cross-encoder", tiny_cross_encoder_path, "--write", str(pins)]) == 0
    printed = capsys.readouterr().out
    assert "cpu:" in printed and "cores" in printed and "runtimes:" in printed and "torch" in printed
    # each LLM reranker's backend: the saved verdict, or that it is measured at first use (nothing loaded here)
    assert re.search(r"llm query-likelihood:\s+gemma-3-270m \((in this process|not installed)", printed), printed
    written = json.loads(pins.read_text())
    for task in ("cross-encoder", "bi-encoder"):
        assert re.search(rf"{task}:\s+{written[task]['backend']} in {written[task]['dtype']} ", printed), printed
        assert written[task]["why"]
    monkeypatch.setenv("RAG_RERANK_PLAN", str(pins))
    reranker, bi_encoder = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu"), BiEncoder()
    assert (reranker.backend, reranker.dtype) == (
        written["cross-encoder"]["backend"],
        written["cross-encoder"]["dtype"],
    )
    assert (bi_encoder.backend, bi_encoder.dtype) == (written["bi-encoder"]["backend"], written["bi-encoder"]["dtype"])
    assert "pinned by RAG_RERANK_PLAN" in reranker.plan.why
