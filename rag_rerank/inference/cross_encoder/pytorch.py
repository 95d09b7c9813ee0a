"""The model's own PyTorch forward, under ``inference_mode``: float32 (or the dtype the model was
loaded in), or int8 Linear layers (``rag_rerank.inference.torch_int8``); optionally ``torch.compile``d."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rag_rerank.inference.tokens import Pairs, length_batches, loaded_dtype, scatter

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

# Small batches are faster on CPU: the attention scores of 8 pairs of ~250 tokens stay in
# cache, 32 do not (1.5x measured with 512-token pairs); GPUs want larger batches.
CPU_BATCH_SIZE, ACCELERATOR_BATCH_SIZE = 8, 32


class TorchBackend:
    def __init__(
        self, model: CrossEncoder, *, batch_size: int | None, compile: bool, dtype: str = "float32", network: Any = None
    ):
        self.model = model
        from rag_rerank.inference.first_token import first_token_network

        self.network: Any = first_token_network(network if network is not None else model.model)
        self.batch_size = batch_size or (CPU_BATCH_SIZE if model.device.type == "cpu" else ACCELERATOR_BATCH_SIZE)
        # as loaded (torch-int8's Linears say int8 by the backend's name)
        self.dtype = loaded_dtype(model)
        if compile:
            self._compile()

    def logits(self, pairs: Pairs) -> np.ndarray:
        rows, batches = length_batches(self.model, pairs, self.batch_size)
        return scatter(rows, map(self._forward, batches), len(pairs))

    def close(self) -> None:
        pass

    def _forward(self, batch: dict[str, Any]) -> np.ndarray:
        import torch

        device = self.model.device
        with torch.inference_mode():
            features = {key: torch.from_numpy(np.asarray(value)).to(device) for key, value in batch.items()}
            return self.network(**features).logits.float().cpu().numpy()

    def _compile(self) -> None:
        """Compile now, for every batch shape: sizes vary freely (dynamic), but a batch of one
        pair gets its own graph, so both are built here rather than on a user's query."""
        import torch
        from torch._dynamo.exc import BackendCompilerFailed
        from torch._inductor.exc import InductorError

        from rag_rerank.inference.torch_int8 import CALIBRATION_PAIRS

        self.network = torch.compile(self.network, dynamic=True)
        try:
            for pairs in (CALIBRATION_PAIRS[:2], CALIBRATION_PAIRS[:1]):
                self.logits(pairs)
        except (BackendCompilerFailed, InductorError) as error:
            raise RuntimeError(
                f"compile=True failed: torch.compile could not build the model ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}). On CPU it needs a C++ compiler "
                "(e.g. apt install g++); or use compile=False, which gives the same scores more slowly."
            ) from error


def int8(model: CrossEncoder, *, batch_size: int | None, compile: bool, dtype: str = "float32") -> TorchBackend:
    """The torch backend over int8 Linear layers: SmoothQuant, per-channel weights, per-token activations."""
    if model.device.type != "cpu":
        raise ValueError(
            f"backend='torch-int8' is for CPUs (the model is on {model.device}); "
            "on a GPU use backend='torch' with dtype='float16' or 'bfloat16'"
        )
    from rag_rerank.inference.torch_int8 import quantize_int8

    return TorchBackend(
        model, batch_size=batch_size, compile=compile, network=quantize_int8(model.model, model.tokenizer)
    )
