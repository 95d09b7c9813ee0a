"""int8 graphs: the rewrite that ONNX Runtime runs (``quantize_per_token``) and the weights that
OpenVINO runs (``int8_weights``). The torch backend's int8 is ``torch_int8``.

For ONNX Runtime every Linear becomes int8 x int8 -> int32 with one activation scale per token:
ONNX Runtime's own dynamic quantisation has one scale per batch, and the outlier tokens of a pair
then coarsen every other token. For OpenVINO each weight keeps one scale per group of input
channels and the CPU plugin quantises the activations per group at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

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


INT8_GROUP = 32  # input channels per scale, for the int8 weights and the activations alike


def int8_weights(model: Any) -> Any:
    """``model`` with each constant MatMul weight stored as int8, one scale per ``INT8_GROUP`` input
    channels of each output column (symmetric), dequantised in the graph: OpenVINO's CPU plugin
    recognises that pattern and, with ``DYNAMIC_QUANTIZATION_GROUP_SIZE``, also quantises each
    activation row per group at run time, so the MatMuls run int8 x int8 on VNNI/AMX. Groups that
    small keep all-MiniLM-L6-v2's vectors at cosine 0.9997 to float32 (one scale per column: 0.9993)."""
    import openvino
    import openvino.opset13 as ops

    for node in model.get_ordered_ops():
        weight = node.input_value(1).get_node() if node.get_type_name() == "MatMul" else None
        if weight is None or weight.get_type_name() != "Constant" or len(weight.get_output_shape(0)) != 2:
            continue
        w = weight.get_data().astype(np.float32)
        rows = w.T if node.get_attributes().get("transpose_b", False) else w  # [in, out]
        inputs, outputs = rows.shape
        group = INT8_GROUP if inputs % INT8_GROUP == 0 else inputs
        grouped = rows.reshape(inputs // group, group, outputs)
        scale = np.maximum(np.abs(grouped).max(axis=1, keepdims=True), 1e-12) / 127
        q = np.clip(np.round(grouped / scale), -127, 127).astype(np.int8)
        dequantised = ops.multiply(ops.convert(ops.constant(q), openvino.Type.f32), ops.constant(scale))
        flat = ops.reshape(dequantised, ops.constant(np.array([inputs, outputs], np.int64)), special_zero=False)
        if rows is not w:
            flat = ops.transpose(flat, ops.constant(np.array([1, 0], np.int64)))
        node.input(1).replace_source_output(flat.output(0))
    return model
