"""ONNX Runtime execution of a cross-encoder: fused transformer graph, optionally int8.

The model is exported locally from the loaded PyTorch weights (no download), with eager
attention: the SDPA export is a pattern ONNX Runtime neither fuses nor runs as fast. fp32
runs that graph as is (ORT's own graph optimisations apply at load). For ``int8`` the graph
first gets ONNX Runtime's BERT fusions (attention, LayerNorm, GELU), then the Linear
weights are quantised dynamically (int8 weights, uint8 activations, which AVX-512 VNNI runs
natively). Files are cached under ``RAG_RERANK_CACHE``
(default ``~/.cache/rag-rerank``), keyed by the weights, so the export runs once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_FORMAT = "2-eager-opset17"  # part of the cache key: a new export recipe gets new files


def cache_root() -> Path:
    return Path(os.environ.get("RAG_RERANK_CACHE", Path.home() / ".cache" / "rag-rerank"))


class OnnxCrossEncoder:
    """Runs ``logits = model(input_ids, attention_mask, token_type_ids)`` in ONNX Runtime."""

    def __init__(self, hf_model: Any, *, quantize: bool, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError(
                "backend='onnx' needs ONNX Runtime: pip install 'rag-rerank[onnx]' (onnx, onnxruntime, onnxscript)"
            ) from error
        path = _prepared_model(hf_model, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        zeros = np.zeros_like(features["input_ids"])  # for tokenizers without token types
        feeds = {name: np.asarray(features.get(name, zeros)).astype(np.int64) for name in self._inputs}
        return self._session.run(None, feeds)[0]


def _fingerprint(hf_model: Any) -> str:
    """A hash of the weights and config: retraining or swapping the model gives a new file."""
    digest = hashlib.sha256((EXPORT_FORMAT + hf_model.config.to_json_string()).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().float().reshape(-1)
        digest.update(flat[:: max(1, flat.numel() // 4096)].numpy().tobytes())  # a sample: fast and enough
    return digest.hexdigest()[:20]


def _prepared_model(hf_model: Any, quantize: bool) -> Path:
    folder = cache_root() / "onnx" / _fingerprint(hf_model)
    exported, optimized, final = folder / "model.onnx", folder / "model-opt.onnx", folder / "model-int8.onnx"
    if not exported.exists():
        log.info("exporting the cross-encoder to ONNX under %s (once)", folder)
        folder.mkdir(parents=True, exist_ok=True)
        _export(hf_model, exported)
    if not quantize:
        return exported
    if not optimized.exists():
        _optimize(hf_model, exported, optimized)
    if not final.exists():
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = final.with_suffix(".tmp.onnx")
        quantize_dynamic(
            str(optimized),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused ops (FastGelu, Attention) defeat shape inference; their tensors are fp32
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        tmp.replace(final)
    return final


def _export(hf_model: Any, path: Path) -> None:
    import torch

    model = hf_model.eval()
    ids = torch.tensor([[101, 2054, 102, 1037, 3358, 102]] * 2)
    example = (ids, torch.ones_like(ids), torch.tensor([[0, 0, 0, 1, 1, 1]] * 2))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    tmp = path.with_suffix(".tmp.onnx")
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the shared model is restored below
    try:
        torch.onnx.export(
            model,
            example,
            str(tmp),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    finally:
        model.set_attn_implementation(attention)
    tmp.replace(path)


def _optimize(hf_model: Any, source: Path, target: Path) -> None:
    """ONNX Runtime's BERT fusions; falls back to the plain export for other architectures."""
    config = hf_model.config
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        model_type = "bert" if config.model_type in {"bert", "roberta", "xlm-roberta", "electra"} else config.model_type
        optimized = optimize_model(
            str(source),
            model_type=model_type,
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=1,
        )
        optimized.save_model_to_file(str(target))
    except Exception as error:  # unknown architecture for the fusions: keep the plain graph
        log.warning("ONNX graph fusions unavailable for %s (%s); using the plain export", config.model_type, error)
        target.write_bytes(source.read_bytes())
