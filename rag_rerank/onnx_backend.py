"""ONNX Runtime execution of a cross-encoder: fused transformer graph, optionally int8.

The model is exported locally from the loaded PyTorch weights (no download), with eager
attention: the SDPA export is a pattern ONNX Runtime neither fuses nor runs as fast. The
graph then gets ONNX Runtime's BERT fusions (attention, LayerNorm, GELU); fp32 runs that.
For ``int8`` the Linear weights are quantised dynamically (int8 weights, uint8 activations,
which AVX-512 VNNI runs natively) after SmoothQuant scaling, which moves the outlier
channels of the activations into the weights so the per-tensor activation scale fits the
typical channels. Files are cached under ``RAG_RERANK_CACHE`` (default
``~/.cache/rag-rerank``), keyed by the weights and the recipe, so this runs once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_FORMAT = "3-eager-opset17-fused-smooth0.7"  # part of the cache key: a new export recipe gets new files


def cache_root() -> Path:
    return Path(os.environ.get("RAG_RERANK_CACHE", Path.home() / ".cache" / "rag-rerank"))


class OnnxCrossEncoder:
    """Runs ``logits = model(input_ids, attention_mask, token_type_ids)`` in ONNX Runtime.

    ``threads`` batches run side by side, each on one CPU thread, rather than each batch split
    across all threads: a MiniLM batch is too small for ONNX Runtime to split without its
    threads waiting on each other (on 2 cores: 1.2-1.4x, measured with one pair per batch).
    """

    def __init__(self, hf_model: Any, tokenizer: Any, *, quantize: bool, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError(
                "backend='onnx' needs ONNX Runtime: pip install 'rag-rerank[onnx]' (onnx, onnxruntime, onnxscript)"
            ) from error
        path = _prepared_model(hf_model, tokenizer, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, _feeds(features, self._inputs))[0]

    def run_all(self, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """The logits of each batch, in order; ONNX Runtime releases the GIL, so threads run in parallel."""
        if self._pool is None or len(batches) < 2:
            return [self(batch) for batch in batches]
        return list(self._pool.map(self, batches))


def _feeds(features: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    zeros = np.zeros_like(features["input_ids"])  # for tokenizers without token types
    return {name: np.asarray(features.get(name, zeros)).astype(np.int64) for name in names}


def _fingerprint(hf_model: Any) -> str:
    """A hash of the weights and config: retraining or swapping the model gives a new file."""
    digest = hashlib.sha256((EXPORT_FORMAT + hf_model.config.to_json_string()).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().float().reshape(-1)
        digest.update(flat[:: max(1, flat.numel() // 4096)].numpy().tobytes())  # a sample: fast and enough
    return digest.hexdigest()[:20]


def _prepared_model(hf_model: Any, tokenizer: Any, quantize: bool) -> Path:
    folder = cache_root() / "onnx" / _fingerprint(hf_model)
    exported, fused = folder / "model.onnx", folder / "model-fused.onnx"
    smoothed, final = folder / "model-smoothed.onnx", folder / "model-int8.onnx"
    if not exported.exists():
        log.info("exporting the cross-encoder to ONNX under %s (once)", folder)
        folder.mkdir(parents=True, exist_ok=True)
        _export(hf_model, exported)
    if not fused.exists():
        _fuse(hf_model, exported, fused)
    if not quantize:
        return fused
    if not final.exists():
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from rag_rerank.quantization import calibration_inputs

        _smooth(fused, smoothed, calibration_inputs(tokenizer, hf_model.config.max_position_embeddings))
        tmp = final.with_suffix(".tmp.onnx")
        quantize_dynamic(
            str(smoothed),
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


def _fuse(hf_model: Any, source: Path, target: Path) -> None:
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


def _smooth(source: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """SmoothQuant on the graph (see ``rag_rerank.quantization``): ``X W = (X / s) (diag(s) W)``.

    Shrinks the few activation channels with large outliers (MiniLM has them, up to 14x the
    median channel before its FFN) and grows the matching weight rows, which per-channel
    int8 weights absorb. Exact in fp32; the ``X / s`` is one elementwise Mul per Linear.
    """
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from rag_rerank.quantization import smoothing_scale

    model = onnx.load(str(source))
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    linears = [
        node
        for node in model.graph.node
        if node.op_type in ("MatMul", "Attention")
        and node.input[1] in weights
        and len(weights[node.input[1]].dims) == 2
        and uses[node.input[1]] == 1  # a shared weight cannot take one input's scale
    ]
    maxima = _activation_maxima(model, sorted({node.input[0] for node in linears}), calibration)
    scales_for = {}
    for node in linears:
        weight = numpy_helper.to_array(weights[node.input[1]])
        weight_max = torch.from_numpy(np.abs(weight).max(axis=1))
        scale = smoothing_scale(torch.from_numpy(maxima[node.input[0]]), weight_max).numpy().astype(np.float32)
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        model.graph.initializer.append(numpy_helper.from_array(1 / scale, f"{node.name}_smooth_scale"))
        scales_for[node.name] = scale
    nodes = []
    for node in model.graph.node:
        if node.name in scales_for:
            smoothed_input = f"{node.name}_smoothed_input"
            nodes.append(
                helper.make_node(
                    "Mul", [node.input[0], f"{node.name}_smooth_scale"], [smoothed_input], name=f"{node.name}_smooth"
                )
            )
            node.input[0] = smoothed_input
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))


def _activation_maxima(model: Any, names: list[str], calibration: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the named tensors over the calibration inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    maxima: dict[str, np.ndarray] = {}
    for features in calibration:
        for name, value in zip(names, session.run(names, _feeds(features, inputs))):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = np.maximum(maxima.get(name, channel_max), channel_max)
    return maxima
