"""A warm start: a process whose models were loaded once before (in any earlier process) builds their
engines from the cached graphs and the models' records, without importing sentence-transformers,
scikit-learn, transformers or torch, and computes exactly what the full path computes; a changed
model file, or a graph missing from the cache, sends it down the full path again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from rag_rerank import BiEncoder, CrossEncoderReranker, models
from rag_rerank.inference.plan import Plan, write_pins
from rag_rerank.inference.tokens import SavedTokenizer, encode_pairs, pair_lengths, tokenizer_record
from rag_rerank.models import DEFAULT_BI_ENCODER, SHIPPED_CROSS_ENCODER, resolve_model

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SHIPPED = str(SHIPPED_CROSS_ENCODER)
HEAVY = ("sentence_transformers", "sklearn", "transformers", "torch")
QUERY = "what is the pressure distribution on a slender delta wing at supersonic speeds"

# Run in a fresh process: one reranker and one bi-encoder (defaults but for the pins), one score and
# one embedding, then which of HEAVY it imported.
SCRIPT = """
import json, sys
from rag_rerank import BiEncoder, CrossEncoderReranker
query, passages, heavy = json.loads(sys.argv[1])
reranker, bi = CrossEncoderReranker(sys.argv[2]), BiEncoder()
print(json.dumps({
    "scores": reranker.score(query, passages),
    "vectors": bi.embed_documents(passages).tolist(),
    "ran": [reranker.backend, reranker.dtype, bi.backend, bi.dtype],
    "warm": [reranker._warm is not None, bi._warm is not None],
    "imported": [name for name in heavy if name in sys.modules],
}))
"""


def pinned(monkeypatch, folder: Path, cross_encoder: tuple[str, str], bi_encoder: tuple[str, str]) -> Path:
    """A ``RAG_RERANK_PLAN`` pinning both encoders, set for this test (and the processes it starts)."""
    pins = folder / "plan.json"
    write_pins([Plan("cross-encoder", *cross_encoder, "test"), Plan("bi-encoder", *bi_encoder, "test")], pins)
    monkeypatch.setenv("RAG_RERANK_PLAN", str(pins))
    return pins


def forget_loaded_models(monkeypatch) -> None:
    """This process as a fresh one: no model loaded (the loaded ones stay with their users)."""
    monkeypatch.setattr(models, "_cache", OrderedDict())


@pytest.fixture(scope="module")
def texts(cranfield) -> list[str]:
    """Real abstracts, the longest first: several longer than either model reads (cut)."""
    return sorted((doc.text for doc in cranfield.corpus[:60] if doc.text.strip()), key=len, reverse=True)[:24]


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """One cache for the processes of ``test_a_warm_process_imports_none_of_the_model_libraries``:
    the exports are made once for all the pins."""
    return tmp_path_factory.mktemp("warm-cache")


def run_script(texts: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([QUERY, texts, HEAVY]), SHIPPED],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("cross_encoder", "bi_encoder"),
    [
        (("onnx", "float32"), ("openvino", "float32")),
        (("onnx-int8", "float32"), ("openvino", "int8")),
        (("openvino", "float32"), ("openvino", "bfloat16")),
    ],
)
def test_a_warm_process_imports_none_of_the_model_libraries(
    cross_encoder, bi_encoder, texts, warm_cache, tmp_path, monkeypatch
):
    """A first process loads both models (and builds and checks their graphs); the next reaches its first
    score and embedding with none of sentence-transformers, scikit-learn, transformers or torch imported,
    and computes the same numbers."""
    if models.default_device() != "cpu":
        pytest.skip("auto runs torch on an accelerator: nothing to start warm")
    monkeypatch.setenv("RAG_RERANK_CACHE", str(warm_cache))
    pinned(monkeypatch, tmp_path, cross_encoder, bi_encoder)
    shutil.rmtree(warm_cache / "models", ignore_errors=True)  # an earlier case's records: this one starts cold
    cold, warm = run_script(texts), run_script(texts)
    assert cold["warm"] == [False, False] and set(cold["imported"]) == set(HEAVY), cold  # both loaded
    assert warm["warm"] == [True, True], warm
    assert warm["imported"] == []
    assert warm["ran"] == cold["ran"] and warm["ran"][0] == cross_encoder[0]
    np.testing.assert_array_equal(warm["scores"], cold["scores"])
    np.testing.assert_array_equal(warm["vectors"], cold["vectors"])


def test_the_default_device_is_found_without_importing_torch_where_no_gpu_can_be():
    if models._gpu_possible():
        pytest.skip("a GPU driver (or Apple silicon) is here: torch is asked, as it should be")
    code = "import sys; from rag_rerank.models import default_device; print(default_device(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["cpu", "False"]


@pytest.mark.parametrize("name", [SHIPPED, DEFAULT_BI_ENCODER])
def test_the_saved_tokenizer_gives_the_ids_transformers_gives(name, texts):
    """Pairs cut longest-first (a query longer than half the length too), texts cut with their special
    tokens counted, lengths, offsets and padding: as the loaded model's own tokenizer gives them."""
    loaded = (models.load_cross_encoder if name == SHIPPED else models.load_bi_encoder)(name, device="cpu")
    tokenizer = loaded.tokenizer
    saved = SavedTokenizer(json.loads(json.dumps(tokenizer_record(tokenizer))))
    queries = [QUERY, " ".join(texts[:2]), "wing"]  # short, longer than the model reads, one word
    pairs = [(query, text) for query in queries for text in texts]
    for max_length in (32, 128, 320):
        want = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length)
        got = encode_pairs(saved, pairs, max_length)
        assert got == {key: want[key] for key in got} and set(got) == set(tokenizer.model_input_names), max_length
        single = tokenizer(texts, truncation=True, max_length=max_length)
        assert dict(saved(texts, truncation=True, max_length=max_length)) == {key: single[key] for key in single}
    assert pair_lengths(saved, pairs) == pair_lengths(tokenizer, pairs)
    for text in texts[:3] + ["a b", "Ünïcödé ﬁ café"]:
        for options in ({"add_special_tokens": False}, {"add_special_tokens": True, "truncation": False}):
            assert saved(text, **options)["input_ids"] == tokenizer(text, **options)["input_ids"]
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert saved(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"] == offsets
    encoded = tokenizer(texts[:5], truncation=True, max_length=64)
    features = {key: encoded[key] for key in encoded}
    for key, array in tokenizer.pad(features, return_tensors="np").items():
        np.testing.assert_array_equal(saved.pad(features)[key], array)


@pytest.mark.parametrize(("backend", "max_length"), [("onnx", None), ("onnx-int8", None), ("openvino", 128)])
def test_a_warm_reranker_scores_counts_and_cuts_as_the_loaded_one(backend, max_length, texts, tmp_path, monkeypatch):
    """The same scores (passages longer than the model reads among them), lengths, truncation flags,
    token counts and clipped texts; the model itself loaded only when asked for."""
    pinned(monkeypatch, tmp_path, (backend, "float32"), ("openvino", "float32"))
    from rag_rerank.inference.cache import cache_root

    shutil.rmtree(cache_root() / "models", ignore_errors=True)  # records of earlier tests: this one starts cold
    forget_loaded_models(monkeypatch)
    full = CrossEncoderReranker(SHIPPED, max_length=max_length)
    forget_loaded_models(monkeypatch)
    warm = CrossEncoderReranker(SHIPPED, max_length=max_length)
    assert full._warm is None and warm._warm is not None and warm._loaded is None
    assert (warm.backend, warm.dtype, warm.plan.path) == (full.backend, full.dtype, full.plan.path)
    assert warm.backend == backend
    assert warm.max_length == full.max_length == (max_length or 320)
    np.testing.assert_array_equal(warm.score(QUERY, texts), full.score(QUERY, texts))
    assert [(d.text, d.score, d.metadata) for d in warm.rerank(QUERY, texts)] == [
        (d.text, d.score, d.metadata) for d in full.rerank(QUERY, texts)
    ]
    pairs = [(QUERY, text) for text in texts]
    assert warm.pair_lengths(pairs) == full.pair_lengths(pairs) and any(warm.truncated(pairs))
    assert [warm.token_count(t) for t in texts] == [full.token_count(t) for t in texts]
    assert [warm.clip(t, 20) for t in texts] == [full.clip(t, 20) for t in texts]
    assert warm._loaded is None  # nothing so far needed the model
    assert warm._model.model.config.num_labels == 1 and warm._loaded is not None  # loaded when asked for


def test_a_warm_bi_encoder_embeds_with_the_models_prompts_as_the_loaded_one(texts, tmp_path, monkeypatch):
    """A bi-encoder whose model has query and document prompts (the bundled one with prompts added to its
    sentence-transformers config): the same vectors, lengths and widths warm as loaded."""
    folder = tmp_path / "prompted"
    shutil.copytree(resolve_model(DEFAULT_BI_ENCODER), folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "document": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    forget_loaded_models(monkeypatch)
    full = BiEncoder(str(folder), backend="openvino")
    forget_loaded_models(monkeypatch)
    warm = BiEncoder(str(folder), backend="openvino")
    assert full._warm is None and warm._warm is not None and warm._warm.prompts == config["prompts"]
    np.testing.assert_array_equal(warm.embed_documents(texts), full.embed_documents(texts))
    np.testing.assert_array_equal(warm.embed_query(QUERY), full.embed_query(QUERY))
    assert not np.allclose(warm.embed_query(texts[0]), warm.embed_documents(texts[:1])[0])  # the prompts count
    assert (warm.dimension, warm.max_tokens) == (full.dimension, full.max_tokens) == (384, 256)
    assert [warm.fits(t) for t in texts] == [full.fits(t) for t in texts] and not all(warm.fits(t) for t in texts)
    assert warm._loaded is None


def test_a_changed_model_file_or_a_missing_graph_takes_the_full_path(texts, tmp_path, monkeypatch, caplog):
    """The record is keyed by every file of the model's folder: a file touched or added misses it, and
    a graph gone from the cache is made again from the loaded model; each time the full path runs,
    scores the same, and saves what the next process starts warm from."""
    from rag_rerank.inference import warm as warm_start

    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path / "cache"))
    pinned(monkeypatch, tmp_path, ("onnx", "float32"), ("openvino", "float32"))
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)

    def constructed() -> CrossEncoderReranker:
        forget_loaded_models(monkeypatch)
        return CrossEncoderReranker(str(folder))

    first = constructed()
    expected = first.score(QUERY, texts)
    assert first._warm is None and constructed()._warm is not None
    graph = constructed()._engine.session.path
    graph.unlink()  # the fused graph, gone from the cache
    with caplog.at_level("INFO", logger="rag_rerank"):
        rebuilt = constructed()
    assert rebuilt._warm is None and "no warm start (ModelNeeded" in caplog.text and graph.exists()
    assert rebuilt.score(QUERY, texts) == expected
    for change in (
        lambda: os.utime(folder / "tokenizer_config.json", ns=(1, 1)),
        lambda: (folder / "notes.txt").write_text("a file added beside the weights"),
    ):
        assert constructed()._warm is not None
        change()
        assert warm_start.recall("cross-encoder", str(folder), {"max_length": None}) is None
        changed = constructed()
        assert changed._warm is None and changed.score(QUERY, texts) == expected
    assert constructed()._warm is not None  # the full path saved the record of the changed folder
