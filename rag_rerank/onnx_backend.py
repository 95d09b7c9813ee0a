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
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_FORMAT = "3-eager-opset17-fused-smooth0.7"  # part of the cache key: a new export recipe gets new files


def cache_root() -> Path:
    return Path(os.environ.get("RAG_RERANK_CACHE", Path.home() / ".cache" / "rag-rerank"))


class OnnxCrossEncoder:
    """Runs ``logits = model(input_ids, attention_mask, token_type_ids)`` in ONNX Runtime."""

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
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, _feeds(features, self._inputs))[0]


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

        _smooth(fused, smoothed, _calibration_feeds(tokenizer, hf_model.config.max_position_embeddings))
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


SMOOTHING_ALPHA = 0.7  # measured on Cranfield: 0.5 made int8 agreement worse, 0.7 better than none


def _smooth(source: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """SmoothQuant (Xiao et al., 2023): ``X W = (X / s) (diag(s) W)`` for every Linear.

    ``s_j = max|X_j|^a / max|W_j|^(1-a)`` shrinks the few activation channels with large
    outliers (MiniLM has them, e.g. up to 14x the median channel before its FFN) and grows
    the matching weight rows, which per-channel int8 weights absorb. Exact in fp32; the
    ``X / s`` is one elementwise Mul per Linear.
    """
    import onnx
    from onnx import helper, numpy_helper

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
        scale = np.clip(maxima[node.input[0]], 1e-5, None) ** SMOOTHING_ALPHA
        scale = (scale / np.clip(np.abs(weight).max(axis=1), 1e-5, None) ** (1 - SMOOTHING_ALPHA)).astype(np.float32)
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


def _calibration_feeds(tokenizer: Any, max_length: int) -> list[dict[str, np.ndarray]]:
    """The calibration pairs, one unpadded pair per run (no padding tokens in the maxima)."""
    return [
        dict(tokenizer(query, passage, truncation=True, max_length=max_length, return_tensors="np"))
        for query, passage in CALIBRATION_PAIRS
    ]


# Generic search pairs, relevant and not, short and long, to measure activation ranges.
CALIBRATION_PAIRS = [
    (
        "how do vaccines train the immune system",
        "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen. "
        "Antigen-presenting cells show fragments of it to T cells, and B cells that recognise it "
        "multiply and produce antibodies. Some of these cells become long-lived memory cells, so a "
        "later infection by the real pathogen meets a response that is faster and stronger. "
        "Boosters raise the number of memory cells when protection wanes over the years.",
    ),
    (
        "what caused the fall of the western roman empire",
        "Historians point to many causes acting together: political instability with dozens of "
        "emperors in a few decades, a currency debased to pay the army, heavy taxation that drove "
        "farmers off their land, plague, pressure from migrating peoples such as the Goths and the "
        "Vandals, and the division of the empire, which left the west with fewer resources than the "
        "richer east. In 476 the Germanic general Odoacer deposed Romulus Augustulus, a date often "
        "used as the end of the western empire, although Roman law, language and administration "
        "survived for centuries in the kingdoms that followed.",
    ),
    ("python list comprehension syntax", "Bake the bread at 220 degrees for thirty minutes until golden."),
    (
        "python list comprehension syntax",
        "A list comprehension builds a list from an iterable in one expression: [x * x for x in "
        "range(10) if x % 2 == 0] gives the squares of the even numbers below ten. The optional "
        "condition filters items, and nested for clauses iterate like nested loops, outermost first.",
    ),
    (
        "interest rate effect on bond prices",
        "Bond prices move opposite to interest rates. When market rates rise, existing bonds that "
        "pay a lower fixed coupon become less attractive, so their price falls until their yield "
        "matches new issues; when rates fall, the price of existing bonds rises. The size of the "
        "move grows with the bond's duration, which is why long-term bonds are more sensitive "
        "than short-term ones. Investors hedge this risk with a ladder of maturities or with "
        "floating-rate notes whose coupons reset as rates change.",
    ),
    (
        "boundary layer transition on a flat plate at high mach number",
        "Measurements of heat transfer on a sharp flat plate in a hypersonic wind tunnel show that "
        "transition from laminar to turbulent flow moves downstream as the Mach number increases "
        "and as the wall is cooled. The transition Reynolds number depends strongly on the "
        "leading-edge bluntness and on the free-stream disturbance level, so results from "
        "different facilities scatter widely. A correlation in terms of the local Reynolds number "
        "based on momentum thickness collapses most of the data within a factor of two.",
    ),
    ("who won the 2010 football world cup", "Spain beat the Netherlands 1-0 after extra time in Johannesburg."),
    (
        "tenant rights when the landlord does not return the deposit",
        "In most jurisdictions a landlord must return a security deposit within a fixed period after "
        "the tenancy ends, minus documented deductions for unpaid rent or damage beyond normal wear "
        "and tear. Many places require the landlord to keep the deposit in a protected scheme and to "
        "give an itemised list of deductions. A tenant who does not receive the deposit can send a "
        "written demand, then file a claim in small claims court, where some laws award a multiple "
        "of the deposit as a penalty for bad-faith withholding.",
    ),
]
