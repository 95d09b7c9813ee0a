"""ONNX Runtime's graph for a cross-encoder: the export with ONNX Runtime's BERT fusions (attention,
LayerNorm, GELU) for float32, or (int8) with separate Q/K/V projections, then quantised per token
(``quantize``). Built once per model and cached beside the export."""

from __future__ import annotations

import logging
import shutil
from contextlib import suppress
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import made_once, temporary_name, written_whole
from rag_rerank.inference.export import exported_model, quiet
from rag_rerank.inference.quantize import quantize_per_token

log = logging.getLogger(__name__)


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
        with written_whole(final) as tmp, quiet(f"quantising {final.name}", final):
            quantize_per_token(separate_projections, tmp)
    finally:
        with suppress(OSError):
            separate_projections.unlink()


def _fuse(hf_model: Any, source: Path, target: Path, separate_qkv: bool = False) -> None:
    """ONNX Runtime's BERT fusions; falls back to the plain export for other architectures."""
    config = hf_model.config
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        model_type = "bert" if config.model_type in {"bert", "roberta", "xlm-roberta", "electra"} else config.model_type
        with quiet(f"fusing {target.name}", target):
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
