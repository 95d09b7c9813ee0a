"""The main job prints its own progress and results: no framework noise, even on a first run that
exports and checks every graph."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ADI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "adi"
# A Python warning from outside rag_rerank as the warnings module prints it ("masking_utils.py:229:
# TracerWarning: ..."), or a tqdm
# bar of the model loaders
FOREIGN = re.compile(r"^(?!\S*rag_rerank/)\S+\.py:\d+: \w*Warning: |Loading weights|^\s*warnings\.warn\(", re.MULTILINE)


@pytest.mark.skipif(not ADI.exists(), reason="needs ../shared/data/adi")
def test_a_first_demo_run_prints_no_foreign_warning(tmp_path):
    """The demo's code path (rag-rerank demo) on a small real collection with an empty cache: the
    graphs are exported, fused, quantised and checked, and none of torch's tracer warnings, the
    exporters' UserWarnings or the loaders' bars reach the user."""
    env = {**os.environ, "RAG_RERANK_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    argv = ["-m", "rag_rerank.cli", "demo", "--data", str(ADI), "--chroma-path", str(tmp_path / "chroma")]
    done = subprocess.run(
        [sys.executable, *argv, "--no-eval"], env=env, check=False, capture_output=True, text=True, timeout=900
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "reranked" in done.stdout  # it did the job
    assert (tmp_path / "cache").exists() and any((tmp_path / "cache").rglob("*.onnx"))  # and built graphs cold
    assert not FOREIGN.search(printed), FOREIGN.findall(printed)
