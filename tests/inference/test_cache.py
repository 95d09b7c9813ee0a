"""The on-disk cache: written whole, one process at a time, one compiled graph per configuration, one
export per model (every weight counted)."""

import shutil

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


def test_a_failed_write_leaves_no_partial_file_and_a_full_disk_names_the_fix(tmp_path):
    import errno

    from rag_rerank.inference.cache import written_whole

    target = tmp_path / "model.onnx"
    with pytest.raises(OSError, match="RAG_RERANK_CACHE") as info, written_whole(target) as partial:
        partial.write_bytes(b"half a graph")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError), written_whole(target) as partial:  # any other error: raised as it is
        partial.write_bytes(b"half a graph")
        raise ValueError("bad graph")
    assert list(tmp_path.iterdir()) == []
    with written_whole(target) as whole:
        whole.write_bytes(b"a whole graph")
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"a whole graph"


def test_a_measurement_that_cannot_be_saved_is_still_returned(tmp_path):
    from rag_rerank.inference.calibration import _measured_once

    (tmp_path / "a-file").write_text("")
    verdict = tmp_path / "a-file" / "verdict.json"
    assert _measured_once(verdict, "speedup", [("q", "p")], lambda: 1.5) == 1.5


def test_processes_starting_together_export_once_and_wait_for_a_measurement(
    tiny_cross_encoder_path, tmp_path, monkeypatch
):
    """Server workers or Ray replicas starting at once: one exports while the others wait for it, and
    a measurement in progress elsewhere is waited for and read, not made again beside it (which
    would also disturb its timing). Threads stand in for the processes: the lock is a file lock."""
    import json
    import threading

    from filelock import FileLock

    from rag_rerank.inference import export as onnx_backend
    from rag_rerank.inference.calibration import _measured_once
    from rag_rerank.models import load_cross_encoder

    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path / "cache"))
    model = load_cross_encoder(tiny_cross_encoder_path, device="cpu").model
    exports = []
    real_export = onnx_backend._export
    monkeypatch.setattr(onnx_backend, "_export", lambda *a: exports.append(a) or real_export(*a))
    paths = []
    workers = [threading.Thread(target=lambda: paths.append(onnx_backend.exported_model(model))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(exports) == 1 and len(set(paths)) == 1 and paths[0].exists()

    verdict, pairs = tmp_path / "verdict.json", [("q", "p")]
    _measured_once(tmp_path / "format.json", "speedup", pairs, lambda: 1.5)  # what a finished one writes
    elsewhere = FileLock(f"{verdict}.lock")
    elsewhere.acquire()  # another process is measuring
    read = []
    waiting = threading.Thread(
        target=lambda: read.append(_measured_once(verdict, "speedup", pairs, lambda: pytest.fail("measured twice")))
    )
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not read  # it waits
    verdict.write_text((tmp_path / "format.json").read_text())
    elsewhere.release()
    waiting.join()
    assert read == [1.5] and json.loads(verdict.read_text())["speedup"] == 1.5


def test_each_openvino_precision_compiles_into_a_cache_of_its_own(
    minilm_cross_encoder_path, passages, tmp_path, monkeypatch
):
    """OpenVINO's cache key leaves the precision out: with one cache folder, a bfloat16 compile was
    served the float32 blob of the same graph (NaN scores or a corrupted heap on AMX). Float32, then
    bfloat16, then float32 again under one cache: each scores as torch does, and each configuration
    has a blob of its own (which catches a shared blob on any CPU, AMX or not)."""
    pytest.importorskip("openvino")
    query = "pressure distribution on a slender wing"
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))
    exact = np.array(
        CrossEncoderReranker(minilm_cross_encoder_path, backend="torch", max_length=128).score(query, passages)
    )
    compiled = set()
    for dtype in ("float32", "bfloat16", "float32"):
        reranker = CrossEncoderReranker(minilm_cross_encoder_path, backend="openvino", dtype=dtype, max_length=128)
        if reranker.dtype != dtype:
            pytest.skip("this CPU has no bfloat16 kernels (AVX-512 BF16 or AMX): OpenVINO runs float32 only")
        scores = np.array(reranker.score(query, passages))
        assert np.isfinite(scores).all()
        if dtype == "float32":
            assert np.abs(scores - exact).max() < 1e-3
        assert kendalltau(scores, exact).statistic > 0.95
        compiled.add(dtype)
        blobs = list((tmp_path / "openvino").rglob("*.blob"))
        assert len(blobs) == len(compiled)  # one blob per configuration, and the second float32 compile read its own
        assert sorted(blob.parent.name.split("-")[0] for blob in blobs) == sorted(compiled)


def test_the_cache_identity_of_a_model_covers_every_weight(tiny_cross_encoder_path):
    """Two models that differ in one weight element must not share exported graphs."""
    from rag_rerank.inference.export import fingerprint
    from rag_rerank.models import load_cross_encoder

    model = load_cross_encoder(tiny_cross_encoder_path, device="cpu").model
    before = fingerprint(model)
    weight = model.bert.encoder.layer[1].output.dense.weight
    with torch.no_grad():
        weight.view(-1)[1] += 1e-3  # not an element a sample of every n-th would read
        changed = fingerprint(model)
        weight.view(-1)[1] -= 1e-3
    assert changed != before
    assert fingerprint(model) == before


def test_openvino_compiles_without_its_cache_where_that_folder_cannot_be_made(
    tiny_cross_encoder_path, tmp_path, monkeypatch
):
    """A read-only cache filled on another CPU has no folder for this CPU's blobs: OpenVINO compiles
    the (cached) export without a cache instead of failing."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))
    first = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="openvino")
    expected = first.score("wing", ["a wing in a slipstream", "heat transfer"])
    shutil.rmtree(tmp_path / "openvino")
    (tmp_path / "openvino").write_text("")  # a file where the compiled blobs' folder would go
    again = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="openvino")
    assert again.score("wing", ["a wing in a slipstream", "heat transfer"]) == pytest.approx(expected, abs=1e-6)
