"""The cross-attention weights the hooks recompute are the ones the models apply: for the native model, weights @
values gives the module's own output before its output projection; for HF models, eager attention's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.models.test_memory import padded_batch, tiny_model, with_memory
from tests.models.tiny_hf import save_tiny_model
from weaver.explain.attention import (
    RecordedAttention,
    cross_attention_scores,
    read_source_states,
    recorded_cross_attention,
    source_width,
)
from weaver.models.pretrained import PretrainedSeq2Seq, build_pretrained_seq2seq
from weaver.tasks.loss import relevance_loss


def inputs_of(module: nn.Module) -> tuple[list[Tensor], object]:
    """What each forward passes to ``module`` (its first argument), and the hook handle."""
    seen: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    return seen, handle


def attended(recorded: RecordedAttention, values: Tensor) -> Tensor:
    """(B, T, H * d) attention output from the recorded weights and the (B, H, S, d) values they weigh."""
    if recorded.indices is None:
        heads = recorded.weights @ values
    else:  # sum over each query's K fetched entries
        fetched = values[:, :, None].expand(-1, -1, recorded.indices.size(2), -1, -1)
        fetched = fetched.gather(3, recorded.indices[..., None].expand(-1, -1, -1, -1, values.size(-1)))
        heads = (recorded.weights[..., None, :] @ fetched).squeeze(-2)
    return heads.transpose(1, 2).flatten(2)


@pytest.mark.parametrize(
    "memory",
    [None, {"window": 8, "stride": 4, "top_k": 3}, {"window": 8, "stride": 4, "top_k": 3, "fold_keys": True}],
    ids=["full", "recall", "folded-recall"],
)
def test_native_weights_times_values_give_the_cross_attention_output(memory: dict | None) -> None:
    model = tiny_model() if memory is None else with_memory(tiny_model(), **memory)
    ids, mask = padded_batch([30, 17])
    decoder_ids = padded_batch([6, 6], seed=2)[0]
    layers = [layer.cross_attn for layer in model.decoder_layers]
    captured = [inputs_of(layer.out) for layer in layers]
    with torch.no_grad(), recorded_cross_attention(model, [0, 1], mask.bool()) as recorded:
        memory_states = model.encode(ids, mask)
        model.decode(decoder_ids, memory_states, mask)
    for layer, record, (seen, handle) in zip(layers, recorded, captured, strict=True):
        handle.remove()
        values = layer.kv(memory_states).chunk(2, dim=-1)[1].unflatten(-1, (layer.num_heads, -1)).transpose(1, 2)
        torch.testing.assert_close(attended(record, values), seen[0])
        if memory is not None:  # each query fetched top_k real entries, heaviest first
            assert record.indices.shape[-1] == memory["top_k"]
            assert (record.weights[..., :-1] >= record.weights[..., 1:]).all()
            assert (record.indices < torch.tensor([30, 17])[:, None, None, None]).all()


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_hf_weights_equal_eager_attention_weights(family: str, tmp_path: Path) -> None:
    folder = save_tiny_model(family, tmp_path / family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    backbone = AutoModelForSeq2SeqLM.from_pretrained(folder, attn_implementation="eager").eval()
    wrapped = PretrainedSeq2Seq(backbone)
    batch = tokenizer(["A library for Python", "Tools to read PNG images quickly"], padding=True, return_tensors="pt")
    decoder_ids = torch.tensor([[wrapped.decoder_start_token_id, 40, 41, 42]] * 2)
    with torch.no_grad():
        eager = backbone(**batch, decoder_input_ids=decoder_ids, output_attentions=True).cross_attentions
        with recorded_cross_attention(wrapped, [0, 1], batch["attention_mask"].bool()) as recorded:
            wrapped(batch["input_ids"], batch["attention_mask"], decoder_ids)
    assert len(recorded) == len(eager) == 2
    for record, expected in zip(recorded, eager, strict=True):
        torch.testing.assert_close(record.weights, expected.float())


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_hf_recall_weights_times_values_give_the_cross_attention_output(family: str, tmp_path: Path) -> None:
    folder = save_tiny_model(family, tmp_path / family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = build_pretrained_seq2seq(tokenizer, str(folder), memory={"window": 8, "stride": 4, "top_k": 3}).eval()
    batch = tokenizer(["A library for reading PNG images", "Python tools"], padding=True, return_tensors="pt")
    decoder_ids = torch.tensor([[model.decoder_start_token_id, 40, 41, 42]] * 2)
    decoder = model.backbone.get_decoder()
    module = decoder.layers[1].encoder_attn if family == "bart" else decoder.block[1].layer[1].EncDecAttention
    seen, handle = inputs_of(module.out_proj if family == "bart" else module.o)
    states: list[Tensor] = []
    states_handle = module.register_forward_pre_hook(
        lambda _, args, kwargs: states.append(kwargs["key_value_states"]), with_kwargs=True
    )
    with torch.no_grad(), recorded_cross_attention(model, [1], batch["attention_mask"].bool()) as recorded:
        model(batch["input_ids"], batch["attention_mask"], decoder_ids)
    handle.remove()
    states_handle.remove()
    assert recorded[0].indices.shape[-1] == 3  # top_k entries per query, not the whole memory
    value = module.v_proj if family == "bart" else module.v
    values = value(states[0]).unflatten(-1, (recorded[0].weights.size(1), -1)).transpose(1, 2)
    torch.testing.assert_close(attended(recorded[0], values), seen[0])


@pytest.mark.parametrize("memory", [None, {"window": 8, "stride": 4, "top_k": 3}], ids=["full", "recall"])
def test_scores_for_a_relevance_loss_are_every_layers_full_attention_and_train_it(memory: dict | None) -> None:
    torch.manual_seed(0)
    model = tiny_model() if memory is None else with_memory(tiny_model(), **memory)
    model.train()
    ids, mask = padded_batch([30, 17])
    decoder_ids = padded_batch([6, 6], seed=2)[0]
    relevant = torch.zeros_like(mask, dtype=torch.bool)
    relevant[0, 10:14], relevant[1, 3:5] = True, True  # a few tokens each target should come from
    targets = torch.ones_like(decoder_ids, dtype=torch.bool)
    with torch.no_grad(), recorded_cross_attention(model.eval(), [0, 1], mask.bool()) as recorded:
        model.decode(decoder_ids, model.encode(ids, mask), mask)
    with cross_attention_scores(model, mask.bool()) as scores:
        model.decode(decoder_ids, model.encode(ids, mask), mask)
    assert len(scores) == len(model.decoder_layers) and scores[0].shape == (2, 4, 6, 30)
    if memory is None:  # the same weights explain reads, before any softmax
        for layer, record in zip(scores, recorded, strict=True):
            torch.testing.assert_close(layer.softmax(-1), record.weights)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        with cross_attention_scores(model, mask.bool()) as scores:
            model.decode(decoder_ids, model.encode(ids, mask), mask)
        loss = relevance_loss(scores, relevant, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # From about chance (4 of 30 and 2 of 17 tokens) to most of the attention on the relevant tokens.
    assert losses[0] > 1.5 and losses[-1] < 0.3


@pytest.mark.parametrize("family", ["native", "native-memory", "bart", "t5"])
def test_source_states_read_are_the_encoder_output_with_their_gradients(family: str, tmp_path: Path) -> None:
    """What `task.relevance_tagging_weight`'s probe reads: once per forward, of the width `source_width` gives."""
    decoder_ids = padded_batch([4, 4], seed=2)[0]
    if family.startswith("native"):
        model = tiny_model() if family == "native" else with_memory(tiny_model(), window=8, stride=4, top_k=3)
        ids, mask = padded_batch([30, 17])
        encoded = model.encode(ids, mask)
    else:
        folder = save_tiny_model(family, tmp_path / family)
        model = build_pretrained_seq2seq(AutoTokenizer.from_pretrained(folder), str(folder)).eval()  # no dropout
        ids, mask = padded_batch([12, 9])
        encoded = model.backbone.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    with read_source_states(model) as states:
        model(ids, mask, decoder_ids)
    assert len(states) == 1 and states[0].requires_grad
    assert states[0].shape == (*ids.shape, source_width(model))
    torch.testing.assert_close(states[0], encoded)
