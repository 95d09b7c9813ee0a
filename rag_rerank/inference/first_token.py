"""A cross-encoder whose last layer computes the first token only: same logits, less work.

A BERT-style classification head reads one vector, the last layer's first token ([CLS]).
That layer still needs keys and values for every token, but its queries, attention rows,
output projection and feed-forward only for the first: one layer's work drops to ~1/6, about
14% of a MiniLM-L6 pair's work, exactly (the skipped rows never reach the logits).
``first_token_network`` builds such a network beside the loaded one (the weights are shared,
the user's model is not changed) and keeps it only if it gives the full network's logits on a
padded batch, so an architecture whose head reads more (mean pooling) keeps the full network.
The torch backends run it, and the ONNX export (so ONNX Runtime and OpenVINO) is made from it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

CHECK_LENGTHS = (7, 19, 40)  # the check's batch: three sequences, two of them padded


def first_token_network(network: Any) -> Any:
    """``network`` with its last layer computing only the first token, if that keeps its logits;
    else ``network`` itself (logged)."""
    encoder = getattr(getattr(network, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers or not _bert_like(layers[-1]) or not hasattr(network, network.base_model_prefix):
        log.info("last-layer pruning skipped: %s has no BERT-style encoder layers", type(network).__name__)
        return network
    pruned = _with_last_layer(network, encoder, FirstTokenLayer(layers[-1]))
    if not _same_logits(network, pruned):
        log.info("last-layer pruning skipped: %s reads more than the first token", type(network).__name__)
        return network
    return pruned


def _bert_like(layer: Any) -> bool:
    attention = getattr(layer, "attention", None)
    names = ("query", "key", "value", "attention_head_size", "scaling")
    return all(hasattr(getattr(attention, "self", None), n) for n in names) and hasattr(layer, "feed_forward_chunk")


def _with_last_layer(network: Any, encoder: Any, last: Any) -> Any:
    """A copy of ``network`` sharing every weight, whose encoder's last layer is ``last``."""

    def shallow(module: Any) -> Any:
        clone = copy.copy(module)
        clone._modules = dict(module._modules)  # its own children table; the children are shared
        return clone

    clone, path = shallow(network), network.base_model_prefix
    base = shallow(getattr(network, path))
    clone._modules[path] = base
    base._modules["encoder"] = shallow(encoder)
    base.encoder._modules["layer"] = torch.nn.ModuleList([*encoder.layer[:-1], last])
    return clone


def _same_logits(network: Any, pruned: Any) -> bool:
    """Whether both give the same logits for a padded batch of random token ids (no tokenizer needed)."""
    parameter, config = next(network.parameters()), network.config
    lengths = torch.tensor(CHECK_LENGTHS)[:, None]
    positions = torch.arange(max(CHECK_LENGTHS))
    mask = (positions < lengths).long()
    ids = torch.randint(5, config.vocab_size, mask.shape, generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids.masked_fill(mask == 0, config.pad_token_id or 0), "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) > 1:  # the second half of each sequence as segment 1
        batch["token_type_ids"] = (positions >= lengths // 2).long() * mask
    batch = {key: value.to(parameter.device) for key, value in batch.items()}
    with torch.inference_mode():
        full, fewer = network(**batch).logits.float(), pruned(**batch).logits.float()
    tolerance = 1e-4 if parameter.dtype == torch.float32 else 3e-2  # 16-bit rounds differently per row block
    return bool(full.shape == fewer.shape and (full - fewer).abs().max() <= tolerance * (1 + full.abs().max()))


class FirstTokenLayer(torch.nn.Module):
    """A BERT-style encoder layer whose output is its first token's row only."""

    def __init__(self, layer: Any):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        attention = self.layer.attention.self
        first = hidden_states[:, :1]
        batch, length, _ = hidden_states.shape

        def heads(x: Any, rows: int) -> Any:
            return x.view(batch, rows, -1, attention.attention_head_size).transpose(1, 2)

        query = heads(attention.query(first), 1)
        key, value = heads(attention.key(hidden_states), length), heads(attention.value(hidden_states), length)
        scores = torch.matmul(query, key.transpose(2, 3)) * attention.scaling
        if attention_mask is not None:  # additive (eager) or boolean (sdpa), [batch, 1, rows, length]
            mask = attention_mask[..., :1, :]
            scores = (
                scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
            )
        context = torch.matmul(scores.softmax(-1), value).transpose(1, 2).reshape(batch, 1, -1)
        return self.layer.feed_forward_chunk(self.layer.attention.output(context, first))
