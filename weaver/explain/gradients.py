"""Gradient attribution of each output token's log-probability to the source, with captum's layer methods.

Attributions are taken at the source embeddings as the encoder's first layer reads them (tokens and positions). The
token embedding table is shared with the decoder in most models, so captum cannot hook it for the source alone:
an identity "probe" module is called on the first encoder layer's input instead, and captum hooks the probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import Tensor, nn

from weaver.explain.attention import base_model
from weaver.models.weaver import WeaverModel

GRADIENT_METHODS = ("integrated_gradients", "input_x_gradient")


def first_encoder_layer(model: nn.Module) -> nn.Module:
    inner = base_model(model)
    if isinstance(inner, WeaverModel):
        return inner.encoder_layers[0]
    encoder = inner.backbone.get_encoder()
    layers = encoder.layers if hasattr(encoder, "layers") else encoder.block  # BART family / T5 family
    return layers[0]


@contextmanager
def source_embedding_probe(model: nn.Module) -> Iterator[nn.Module]:
    """An identity module through which the embedded source reaches the encoder while the context is open."""
    probe = nn.Identity()

    def through_probe(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (probe(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": probe(kwargs["hidden_states"])}

    handle = first_encoder_layer(model).register_forward_pre_hook(through_probe, with_kwargs=True)
    try:
        yield probe
    finally:
        handle.remove()


def gradient_relevance(
    model: nn.Module,
    method: str,
    input_ids: Tensor,
    attention_mask: Tensor,
    decoder_input_ids: Tensor,
    output_ids: Tensor,
    pad_token_id: int,
    integration_steps: int,
) -> Tensor:
    """(T, S) attributions of one example, (1, S) source and (1, T) output: row t holds each source token's share
    of log p(output token t), summed over the embedding dimensions. Integrated gradients start from the source with
    every token replaced by padding, so a row adds up to about log p(token | source) - log p(token | padding)."""

    def output_log_probs(ids: Tensor, mask: Tensor, decoder_ids: Tensor) -> Tensor:  # (N, T)
        log_probs = model(ids, mask, decoder_ids).float().log_softmax(-1)
        return log_probs.gather(-1, output_ids.expand(len(ids), -1)[..., None]).squeeze(-1)

    rows = []
    with source_embedding_probe(model) as probe, torch.enable_grad():
        if method == "integrated_gradients":
            attribution = LayerIntegratedGradients(output_log_probs, probe)
            options = {"baselines": torch.full_like(input_ids, pad_token_id), "n_steps": integration_steps}
        else:
            attribution, options = LayerGradientXActivation(output_log_probs, probe), {}
        for step in range(output_ids.size(1)):
            scores = attribution.attribute(
                input_ids, target=step, additional_forward_args=(attention_mask, decoder_input_ids), **options
            )
            rows.append(scores.sum(-1)[0].detach().float())
    return torch.stack(rows)
