"""ONNX Runtime execution of a cross-encoder: fused transformer graph, optionally int8.

The model is exported locally from the loaded PyTorch weights (no download), with eager
attention: the SDPA export is a pattern ONNX Runtime neither fuses nor runs as fast; its last
layer computes the first token only (``backends.first_token``: same logits, ~1.2x). The
graph then gets ONNX Runtime's BERT fusions (attention, LayerNorm, GELU); fp32 runs that.
For ``int8`` every Linear becomes int8 x int8 -> int32 with one activation scale per token,
as ``rag_rerank.rerank.quantization`` does in torch: ONNX Runtime's own dynamic quantisation has one
scale per batch, and the outlier tokens of a pair then coarsen every other token (Kendall
tau 0.89-0.92 against fp32 instead of 0.95; nDCG@10 on Cranfield moved by 0.007-0.009).
Files are cached under ``RAG_RERANK_CACHE`` (``backends.graph_cache``), keyed by the weights
and the recipe, so this runs once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.rerank.backends.graph_cache import cache_root, made_folder, made_once, temporary_name, written_whole

log = logging.getLogger(__name__)

EXPORT_FORMAT = (
    "7-eager-opset17-firsttoken-fused-noskipln-pertoken7bit"  # part of the cache key: a new recipe gets new files
)


class OnnxCrossEncoder:
    """Runs ``logits = model(input_ids, attention_mask[, token_type_ids])`` in ONNX Runtime.

    ``threads`` batches run side by side, each on one CPU thread, rather than each batch split
    across all threads: a MiniLM batch is too small for ONNX Runtime to split without its
    threads waiting on each other (on 2 cores: 1.2-1.4x, measured with one pair per batch).
    """

    def __init__(self, hf_model: Any, *, quantize: bool, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError(
                "backend='onnx' needs ONNX Runtime: pip install 'rag-rerank[onnx]' (onnx, onnxruntime, onnxscript)"
            ) from error
        path = prepared_graph(hf_model, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None

    def close(self) -> None:
        """Stop the worker threads (the session itself is freed with the object)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds(features, self._inputs))[0]

    def run_all(self, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """The logits of each batch, in order; ONNX Runtime releases the GIL, so threads run in parallel."""
        if self._pool is None or len(batches) < 2:
            return [self(batch) for batch in batches]
        return list(self._pool.map(self, batches))


def feeds(features: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A padded batch as int64 inputs by name (zero token types for tokenizers without them)."""
    zeros = np.zeros_like(features["input_ids"])  # for tokenizers without token types
    return {name: np.asarray(features.get(name, zeros)).astype(np.int64) for name in names}


def fingerprint(hf_model: Any) -> str:
    """A hash of every weight (each byte, in its dtype) and the config: two models that differ
    anywhere, even in one element, get different files (~0.2 s for a MiniLM)."""
    import torch

    digest = hashlib.sha256((EXPORT_FORMAT + hf_model.config.to_json_string()).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # on a GPU the weights live on the device
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().data)  # raw bytes: bfloat16 too, which numpy lacks
    return digest.hexdigest()[:20]


def exported_model(hf_model: Any) -> Path:
    """The plain ONNX export of a cross-encoder (its logits; standard operators only, so other
    runtimes read it too: OpenVINO), made once and cached."""
    return _cached_export(hf_model, "model.onnx", "the cross-encoder")


def exported_encoder(hf_model: Any) -> Path:
    """The plain ONNX export of a bare transformer (a bi-encoder's), giving its token embeddings
    (``last_hidden_state``) for pooling outside the graph; made once and cached."""
    return _cached_export(hf_model, "encoder.onnx", "the bi-encoder", token_embeddings=True)


def _cached_export(hf_model: Any, file_name: str, what: str, token_embeddings: bool = False) -> Path:
    exported = cache_root() / "onnx" / fingerprint(hf_model) / file_name
    if not exported.exists():
        made_folder(exported.parent)

    def export() -> None:
        log.info("exporting %s to ONNX under %s (once)", what, exported.parent)
        _export(hf_model, exported, token_embeddings)

    return made_once(exported, export)


def prepared_graph(hf_model: Any, quantize: bool) -> Path:
    """The graph ONNX Runtime runs for ``hf_model`` (fused float32, or ``quantize``: int8), built once
    and cached: its path also keys what is measured about it (``calibration``)."""
    exported = exported_model(hf_model)
    fused, final = exported.with_name("model-fused.onnx"), exported.with_name("model-int8.onnx")
    if not quantize:
        return made_once(fused, lambda: _fuse(hf_model, exported, fused))
    return made_once(final, lambda: _build_int8(hf_model, exported, final))


def _build_int8(hf_model: Any, exported: Path, final: Path) -> None:
    """The int8 graph at ``final``. MultiHeadAttention keeps the Q/K/V projections as MatMuls that
    can be quantised (the Attention fusion, faster in fp32, hides them inside one op); that graph is
    only a step towards int8, so it is this build's own file and gone after (90 MB less on disk)."""
    separate_projections = temporary_name(exported.with_name("model-fused-mha.onnx"))
    try:
        _fuse(hf_model, exported, separate_projections, separate_qkv=True)
        with written_whole(final) as tmp:
            quantize_per_token(separate_projections, tmp)
    finally:
        with suppress(OSError):
            separate_projections.unlink()


def _export(hf_model: Any, path: Path, token_embeddings: bool = False) -> None:
    """``hf_model`` to ONNX at ``path``: its logits, or (``token_embeddings``) a bare transformer's
    last hidden state, batch and sequence lengths dynamic."""
    import torch

    from rag_rerank.rerank.backends.first_token import first_token_network

    model = hf_model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([[101, 2054, 102, 1037, 3358, 102]] * 2, device=device) % model.config.vocab_size
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if takes_token_types(model):
        example["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2, device=device)
    axes = {name: {0: "batch", 1: "sequence"} for name in example}
    output, output_axes = ("token_embeddings", axes["input_ids"]) if token_embeddings else ("logits", {0: "batch"})
    network = model if token_embeddings else first_token_network(model)
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the shared model is restored below
    try:
        with written_whole(path) as tmp:
            torch.onnx.export(
                _called_by_name(network, list(example), output),
                tuple(example.values()),
                str(tmp),
                input_names=list(example),
                output_names=[output],
                dynamic_axes={**axes, output: output_axes},
                opset_version=17,
                dynamo=False,
            )
    finally:
        model.set_attn_implementation(attention)


def takes_token_types(model: Any) -> bool:
    """Whether ``model`` reads token types: BERT and ELECTRA do; RoBERTa and XLM-RoBERTa (the bge
    rerankers) have one type only, and DistilBERT and ModernBERT take none."""
    import inspect

    return (
        "token_type_ids" in inspect.signature(model.forward).parameters
        and (getattr(model.config, "type_vocab_size", 0) or 0) > 1
    )


def _called_by_name(network: Any, names: list[str], output: str) -> Any:
    """A torch module calling ``network`` with keyword arguments (positional order differs between
    architectures and transformers versions) and returning one output: ``logits`` or the last
    hidden state (``token_embeddings``); torch is imported only here."""
    import torch

    class ByName(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *inputs: Any) -> Any:
            out = self.network(**dict(zip(names, inputs, strict=True)))
            return out.last_hidden_state if output == "token_embeddings" else out.logits

    # in eval mode: the exporter puts a module back in the mode it found it in, and a new module is in
    # training mode, which would switch on dropout in the shared (user's) model after the export
    return ByName().eval()


def _fuse(hf_model: Any, source: Path, target: Path, separate_qkv: bool = False) -> None:
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
            optimization_options=_fusion_options(model_type, separate_qkv),
        )
    except Exception as error:  # noqa: BLE001 - the fusions fail in many ways on an unknown architecture
        log.warning("ONNX graph fusions unavailable for %s (%s); using the plain export", config.model_type, error)
        optimized = None
    with written_whole(target) as tmp:
        if optimized is None:
            shutil.copyfile(source, tmp)
        else:
            optimized.save_model_to_file(str(tmp))


def _fusion_options(model_type: str, separate_qkv: bool) -> Any:
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(model_type)
    options.use_multi_head_attention = separate_qkv
    # residual Add + LayerNormalization stay two ops: ONNX Runtime's fused SkipLayerNormalization
    # runs ~7x slower than both together on CPU (400 vs 60 us for 250 x 384, ORT 1.32)
    options.enable_skip_layer_norm = False
    return options


# Weights in 7 bits: on CPUs without VNNI, int8 products are summed in pairs into int16
# (vpmaddubsw), and 255 x 127 x 2 overflows it; 255 x 63 x 2 does not (tau 0.95 vs 0.94).
WEIGHT_LEVELS = 63


def quantize_per_token(source: Path, target: Path) -> None:
    """Each ``X @ W`` with a constant W becomes, per token row x of X:

    ``m = max|x|``;  ``q = round(127 x / m) + 128`` (uint8);  ``y = MatMulIntegerToFloat(q, W8) m``

    with W quantised per output column. Projections that read the same X (Q, K and V) share
    one quantised X. Attention, LayerNorm and GELU stay fp32. No SmoothQuant here: with a
    scale per token it measured no better (tau 0.949 with it, 0.955 without) and costs a
    pass over every activation.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    readers: dict[str, list[Any]] = {}  # input tensor -> the Linears (MatMul, constant 2-D weight) reading it
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            readers.setdefault(node.input[0], []).append(node)
    constants = []

    def constant(name: str, value: np.ndarray | np.generic) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    unit, offset = constant("pt_scale", np.float32(1 / 127)), constant("pt_offset", np.uint8(128))
    tiny = constant("pt_tiny", np.float32(1e-8))
    reduce_axes: dict[str, Any] = {"axes": [-1]} if _opset(model) < 18 else {}
    replacement: dict[str, list[Any]] = {}
    for g, (x, nodes) in enumerate(readers.items()):
        p = f"pt{g}"
        inputs = [f"{p}_abs"] + ([] if reduce_axes else [constant(f"{p}_axes", np.array([-1], np.int64))])
        quantise = [
            helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("ReduceMax", inputs, [f"{p}_max0"], name=f"{p}_max0", keepdims=1, **reduce_axes),
            helper.make_node("Max", [f"{p}_max0", tiny], [f"{p}_max"], name=f"{p}_max"),
            helper.make_node("Div", [x, f"{p}_max"], [f"{p}_unit"], name=f"{p}_unit"),
            helper.make_node("QuantizeLinear", [f"{p}_unit", unit, offset], [f"{p}_q"], name=f"{p}_quantise"),
        ]
        for j, node in enumerate(nodes):
            w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # [in, out]
            column_scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / WEIGHT_LEVELS
            w8 = np.clip(np.round(w / column_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
            q = f"{p}_{j}"
            matmul = helper.make_node(
                "MatMulIntegerToFloat",
                [
                    f"{p}_q",
                    constant(f"{q}_w8", w8),
                    unit,
                    constant(f"{q}_wscale", column_scale.astype(np.float32)),
                    offset,
                    constant(f"{q}_wzero", np.zeros(len(column_scale), np.int8)),
                ],
                [f"{q}_y"],
                name=f"{q}_int8",
                domain="com.microsoft",
            )
            rescale = helper.make_node("Mul", [f"{q}_y", f"{p}_max"], [node.output[0]], name=f"{q}_rescale")
            replacement[node.output[0]] = (quantise if j == 0 else []) + [matmul, rescale]
    nodes = [new for node in model.graph.node for new in replacement.get(node.output[0], [node])]
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + constants)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(target))


def _opset(model: Any) -> int:
    return next(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx"))


ONNX_BATCH_SIZE = 1  # one pair per batch, the CPU threads side by side: no padding (1.2x over 8 on AVX2)


class OnnxBackend:
    """ONNX Runtime over the exported, fused graph (``quantize``: int8, one scale per token)."""

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int | None,
        compile: bool = False,
        dtype: str = "float32",
        quantize: bool = False,
    ):
        import torch

        self.model = model
        self.batch_size = batch_size or ONNX_BATCH_SIZE
        self.dtype = "float32"  # the graph's; onnx-int8 says int8 by its name
        self.session = OnnxCrossEncoder(model.model, quantize=quantize, threads=torch.get_num_threads())

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from rag_rerank.rerank.backends import length_batches, scatter

        rows, batches = length_batches(self.model, pairs, self.batch_size)
        return scatter(rows, self.session.run_all(batches), len(pairs))

    def close(self) -> None:
        self.session.close()


def int8(model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32") -> OnnxBackend:
    return OnnxBackend(model, batch_size=batch_size, quantize=True)
