"""int8 for the torch backend: SmoothQuant-scaled int8 weights and per-token int8 activations.

``torch._int_mm`` multiplies int8 by int8 into int32 with AVX-512 VNNI on CPUs. Each Linear keeps int8 weights with one scale per output
channel; each call quantises its input with one scale per token, so one long or unusual
token does not coarsen the others (``rag_rerank.inference.quantize`` does the same in ONNX Runtime).
SmoothQuant (Xiao et al., 2023) first moves the outlier activation channels into the
weights: ``X W = (X / s)(diag(s) W)`` with ``s_j = max|X_j|^a / max|W_j|^(1-a)``, the maxima
measured once on the built-in calibration pairs below. Attention, LayerNorm and GELU stay fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

SMOOTHING_ALPHA = 0.7  # measured on Cranfield: 0.5 made int8 agreement worse, 0.7-0.9 alike


def smoothing_scale(activation_max: torch.Tensor, weight_max: torch.Tensor) -> torch.Tensor:
    """Per input channel ``s``; the Linear then sees ``X / s`` and weights ``diag(s) W``."""
    return activation_max.clamp(min=1e-5) ** SMOOTHING_ALPHA / weight_max.clamp(min=1e-5) ** (1 - SMOOTHING_ALPHA)


class Int8Linear(torch.nn.Module):
    """A Linear layer computed as int8 x int8 -> int32, rescaled to float32."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    inverse_smoothing: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear, smoothing: torch.Tensor):
        super().__init__()
        weight = linear.weight.detach().float() * smoothing[None, :]  # [out, in]
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        quantized = (weight / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        self.register_buffer("weight_t", quantized.t())  # [in, out], column-major: _int_mm's fast layout
        self.register_buffer("weight_scale", scale)
        self.register_buffer("inverse_smoothing", 1 / smoothing)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]) * self.inverse_smoothing
        token_scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-8) / 127
        quantized = rows.div_(token_scale).round_().to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float().mul_(token_scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], -1)

    def extra_repr(self) -> str:
        return f"in_features={self.weight_t.shape[0]}, out_features={self.weight_t.shape[1]}, int8 per-token"


def quantize_int8(hf_model: Any, tokenizer: Any) -> Any:
    """A copy of ``hf_model`` whose encoder Linears are ``Int8Linear``; the original is untouched."""
    linears = {
        name: module
        for name, module in hf_model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".encoder." in f".{name}."
    }
    maxima = _input_maxima(hf_model, tokenizer, linears)
    quantized = copy.deepcopy(hf_model).eval()
    for name, linear in linears.items():
        parent_name, _, child = name.rpartition(".")
        smoothing = smoothing_scale(maxima[name], linear.weight.detach().abs().amax(dim=0).float())
        setattr(quantized.get_submodule(parent_name), child, Int8Linear(linear, smoothing))
    return quantized


def _input_maxima(hf_model: Any, tokenizer: Any, linears: dict[str, torch.nn.Linear]) -> dict[str, torch.Tensor]:
    """Per-channel max |x| entering each Linear over the calibration pairs (one pair per pass: no padding)."""
    maxima: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            channel_max = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], channel_max) if name in maxima else channel_max

        return hook

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in linears.items()]
    try:
        with torch.inference_mode():
            for features in calibration_inputs(tokenizer, hf_model.config.max_position_embeddings):
                hf_model(**{key: torch.as_tensor(value).to(hf_model.device) for key, value in features.items()})
    finally:
        for hook in hooks:
            hook.remove()
    return maxima


def calibration_inputs(tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """The calibration pairs tokenised one at a time, as numpy arrays."""
    return [
        dict(tokenizer(query, passage, truncation=True, max_length=max_length, return_tensors="np"))
        for query, passage in CALIBRATION_PAIRS
    ]


# Generic search pairs, relevant and not, short and long, to measure activation ranges.
CALIBRATION_PAIRS = [
    (
        "how do vaccines train the immune system",
        (
            "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen. "
            "Antigen-presenting cells show fragments of it to T cells, and B cells that recognise it "
            "multiply and produce antibodies. Some of these cells become long-lived memory cells, so a "
            "later infection by the real pathogen meets a response that is faster and stronger. "
            "Boosters raise the number of memory cells when protection wanes over the years."
        ),
    ),
    (
        "what caused the fall of the western roman empire",
        (
            "Historians point to many causes acting together: political instability with dozens of "
            "emperors in a few decades, a currency debased to pay the army, heavy taxation that drove "
            "farmers off their land, plague, pressure from migrating peoples such as the Goths and the "
            "Vandals, and the division of the empire, which left the west with fewer resources than the "
            "richer east. In 476 the Germanic general Odoacer deposed Romulus Augustulus, a date often "
            "used as the end of the western empire, although Roman law, language and administration "
            "survived for centuries in the kingdoms that followed."
        ),
    ),
    ("python list comprehension syntax", "Bake the bread at 220 degrees for thirty minutes until golden."),
    (
        "python list comprehension syntax",
        (
            "A list comprehension builds a list from an iterable in one expression: [x * x for x in "
            "range(10) if x % 2 == 0] gives the squares of the even numbers below ten. The optional "
            "condition filters items, and nested for clauses iterate like nested loops, outermost first."
        ),
    ),
    (
        "interest rate effect on bond prices",
        (
            "Bond prices move opposite to interest rates. When market rates rise, existing bonds that "
            "pay a lower fixed coupon become less attractive, so their price falls until their yield "
            "matches new issues; when rates fall, the price of existing bonds rises. The size of the "
            "move grows with the bond's duration, which is why long-term bonds are more sensitive "
            "than short-term ones. Investors hedge this risk with a ladder of maturities or with "
            "floating-rate notes whose coupons reset as rates change."
        ),
    ),
    (
        "boundary layer transition on a flat plate at high mach number",
        (
            "Measurements of heat transfer on a sharp flat plate in a hypersonic wind tunnel show that "
            "transition from laminar to turbulent flow moves downstream as the Mach number increases "
            "and as the wall is cooled. The transition Reynolds number depends strongly on the "
            "leading-edge bluntness and on the free-stream disturbance level, so results from "
            "different facilities scatter widely. A correlation in terms of the local Reynolds number "
            "based on momentum thickness collapses most of the data within a factor of two."
        ),
    ),
    ("who won the 2010 football world cup", "Spain beat the Netherlands 1-0 after extra time in Johannesburg."),
    (
        "tenant rights when the landlord does not return the deposit",
        (
            "In most jurisdictions a landlord must return a security deposit within a fixed period after "
            "the tenancy ends, minus documented deductions for unpaid rent or damage beyond normal wear "
            "and tear. Many places require the landlord to keep the deposit in a protected scheme and to "
            "give an itemised list of deductions. A tenant who does not receive the deposit can send a "
            "written demand, then file a claim in small claims court, where some laws award a multiple "
            "of the deposit as a penalty for bad-faith withholding."
        ),
    ),
]
