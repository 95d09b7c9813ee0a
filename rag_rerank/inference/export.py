"""A model exported to ONNX once, from its loaded PyTorch weights (no download), and cached.

The export uses eager attention (the SDPA export is a pattern ONNX Runtime neither fuses nor runs
as fast), and a cross-encoder's last layer computes the first token only (``first_token``: same
logits). Files live under ``RAG_RERANK_CACHE/onnx/<fingerprint>``: the fingerprint hashes every
weight and the config, so a retrained or swapped model gets files of its own.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import cache_root, made_folder, made_once, written_whole

log = logging.getLogger(__name__)

EXPORT_FORMAT = (
    "7-eager-opset17-firsttoken-fused-noskipln-pertoken7bit"  # part of the cache key: a new recipe gets new files
)


class ModelNeeded(LookupError):
    """A model known by its fingerprint alone (``Known``) was asked for what only its loaded weights
    give (an export that is not cached, its config): the caller loads the model and takes the full path."""


@dataclass(frozen=True)
class Known:
    """A transformer known by its fingerprint alone (``inference.warm``), not loaded: it finds its
    cached graphs, plan and verdicts (all keyed by the fingerprint), and anything else asked of it
    raises ``ModelNeeded`` (never an AttributeError, which ``getattr`` with a default would hide)."""

    fingerprint: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # Python's own protocols (copy, pickle) asking what the class lacks
            raise AttributeError(name)
        raise ModelNeeded(f"the model {self.fingerprint} is not loaded (asked for its {name})")


_fingerprints: ContextVar[dict[int, tuple[Any, str]] | None] = ContextVar("fingerprints", default=None)


@contextmanager
def fingerprinted() -> Iterator[None]:
    """Inside the block each model is hashed once (``fingerprint``): a construction asks for the
    fingerprint in several places (its plan, its graphs, its verdicts, its record) while the weights
    stay put; a block inside another shares the outer one's hashes."""
    if _fingerprints.get() is not None:
        yield
        return
    token = _fingerprints.set({})
    try:
        yield
    finally:
        _fingerprints.reset(token)


def fingerprint(hf_model: Any) -> str:
    """A hash of every weight (each byte, in its dtype) and the config: two models that differ
    anywhere, even in one element, get different files (~0.05-0.2 s for a MiniLM; once inside
    ``fingerprinted``); a ``Known`` model's own."""
    if isinstance(hf_model, Known):
        return hf_model.fingerprint
    memo = _fingerprints.get()
    if memo is not None and id(hf_model) in memo and memo[id(hf_model)][0] is hf_model:
        return memo[id(hf_model)][1]
    hashed = _hashed(hf_model)
    if memo is not None:
        memo[id(hf_model)] = (hf_model, hashed)
    return hashed


def _hashed(hf_model: Any) -> str:
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


def _export(hf_model: Any, path: Path, token_embeddings: bool = False) -> None:
    """``hf_model`` to ONNX at ``path``: its logits, or (``token_embeddings``) a bare transformer's
    last hidden state, batch and sequence lengths dynamic."""
    import torch

    from rag_rerank.inference.first_token import first_token_network

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
        with written_whole(path) as tmp, quiet(f"exporting {path.name}", path):
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


WARNINGS_FILE = "build-warnings.txt"  # beside the graphs: what the exporters warned while building them


@contextmanager
def quiet(step: str, beside: Path) -> Iterator[None]:
    """Runs a build ``step`` (an export, a fusion, a quantisation) with the frameworks' warnings
    captured (torch's tracer, the ONNX exporter: noise to a user, who did not call them): each is
    logged at debug level and appended to ``build-warnings.txt`` beside the graph at ``beside``;
    they are logged as warnings only if the step fails, or when the graph later ranks differently
    from torch (``build_warnings``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failed = True
        try:
            yield
            failed = False
        finally:
            lines = [f"{step}: {w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in caught]
            for line in lines:
                (log.warning if failed else log.debug)("%s", line)
            if lines and not failed:
                _kept(beside.with_name(WARNINGS_FILE), lines)


def _kept(path: Path, lines: list[str]) -> None:
    try:
        with path.open("a") as kept:
            kept.write("".join(f"{line}\n" for line in lines))
    except OSError as error:  # a read-only cache: they were logged at debug level
        log.debug("build warnings not kept in %s (%s)", path, error)


def build_warnings(graph: Path) -> str:
    """What the exporters warned while building the graph at ``graph`` ("" where nothing)."""
    try:
        return (graph.parent / WARNINGS_FILE).read_text()
    except OSError:
        return ""
