"""The native Weaver Transformer: shapes, gradients, tying, masking, incremental decoding, bf16."""

import json

import pytest
import torch
import torch.nn.functional as F

from weaver.errors import ConfigError
from weaver.models import DecoderCache, WeaverConfig, WeaverModel, build_weaver, pointer_mixture
from weaver.models.kernels import Dropout, attention
from weaver.tasks.loss import smoothed_cross_entropy

TINY = dict(d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64, max_positions=64)
VOCAB = 50


def tiny_model(seed: int = 0, std: float = 0.2, **overrides) -> WeaverModel:
    """A random tiny model in eval mode. The larger-than-default init makes outputs depend on the input."""
    torch.manual_seed(seed)
    model = build_weaver(VOCAB, **{**TINY, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random sources (pad id 0, real tokens in [3, VOCAB))."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask.long()


def test_forward_shapes_and_float_logits():
    model = tiny_model()
    src, mask = padded_batch([7, 4, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    logits = model(src, mask, tgt)
    assert logits.shape == (3, 6, VOCAB) and logits.dtype == torch.float32
    states = model.encode(src, mask)
    assert states.shape == (3, 7, TINY["d_model"])
    assert model.decode(tgt, states, mask).shape == (3, 6, VOCAB)


def test_backward_reaches_every_parameter():
    model = tiny_model().train()
    src, mask = padded_batch([7, 4, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    model(src, mask, tgt).logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_embedding_is_tied_and_counted_once():
    model = build_weaver(VOCAB, **TINY)
    matrices = [k for k, v in model.state_dict().items() if v.shape == (VOCAB, TINY["d_model"])]
    assert matrices == ["embed.weight"]  # the output projection is the embedding, not a copy
    final_states = {}
    model.decoder_norm.register_forward_hook(lambda module, args, out: final_states.update(h=out))
    logits = model(*padded_batch([5, 3]), torch.randint(3, VOCAB, (2, 4)))
    torch.testing.assert_close(logits, final_states["h"] @ model.embed.weight.T)
    assert model.embed.weight[model.config.pad_token_id].abs().sum() == 0
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    d, f = TINY["d_model"], TINY["ffn_dim"]
    attn, ffn, norm = 4 * d * d + 4 * d, 2 * d * f + f + d, 2 * d
    encoder = TINY["num_encoder_layers"] * (attn + ffn + 2 * norm) + norm
    decoder = TINY["num_decoder_layers"] * (2 * attn + ffn + 3 * norm) + norm
    assert model.num_parameters() == VOCAB * d + encoder + decoder
    model.embed.weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - VOCAB * d


def test_too_long_input_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(torch.ones(1, TINY["max_positions"] + 1, dtype=torch.long), torch.ones(1, 65))


def test_config_round_trips_through_json_and_validates():
    model = build_weaver(VOCAB, **TINY, pad_token_id=3, bos_token_id=4, eos_token_id=5)
    assert model.decoder_start_token_id == 4 and model.config.pad_token_id == 3
    assert model.embed.weight[3].abs().sum() == 0
    config = WeaverConfig(vocab_size=VOCAB, **TINY)
    assert WeaverConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown"):
        WeaverConfig.from_dict({**config.to_dict(), "d_modle": 3})
    with pytest.raises(ValueError, match="num_heads"):
        WeaverConfig(vocab_size=VOCAB, d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="model.copy_attention must be true or false, got 'maybe'"):
        build_weaver(VOCAB, **TINY, copy_attention="maybe")
    with pytest.raises(ConfigError, match="model.activation_checkpointing must be true or false"):
        build_weaver(VOCAB, **TINY, activation_checkpointing="yes")
    with pytest.raises(ValueError, match="num_decoder_layers"):
        WeaverConfig(vocab_size=VOCAB, num_decoder_layers=0)
    with pytest.raises(ValueError, match="eos_token_id"):
        WeaverConfig(vocab_size=VOCAB, eos_token_id=VOCAB)


def test_padding_does_not_change_results():
    model = tiny_model(seed=1)
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 4))
    batched = model(src, mask, tgt)
    generated = model.generate(src, mask, max_new_tokens=6)
    for i, n in enumerate(mask.sum(1).tolist()):
        alone_src, alone_mask = src[i : i + 1, :n], mask[i : i + 1, :n]
        torch.testing.assert_close(model(alone_src, alone_mask, tgt[i : i + 1]), batched[i : i + 1])
        torch.testing.assert_close(model.encode(alone_src, alone_mask)[0], model.encode(src, mask)[i, :n])
        alone = model.generate(alone_src, alone_mask, max_new_tokens=6)[0]
        assert torch.equal(alone, generated[i, : len(alone)])
        assert (generated[i, len(alone) :] == model.config.pad_token_id).all()
    assert not torch.equal(generated[0], generated[1])  # the generations really depend on the source


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 1, 3], [9]])
def test_incremental_decoding_matches_full_prefix(chunks):
    model = tiny_model()
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 9))
    states = model.encode(src, mask)
    full = model.decode(tgt, states, mask)
    cache, pieces, start = model.new_cache(), [], 0
    for size in chunks:
        pieces.append(model.decode(tgt[:, start : start + size], states, mask, cache))
        start += size
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cross_attention_cache_is_computed_once():
    model = tiny_model()
    src, mask = padded_batch([7, 3])
    states = model.encode(src, mask)
    cache = model.new_cache()
    model.decode(torch.ones(2, 1, dtype=torch.long), states, mask, cache)
    cross = [layer.cross_kv[0] for layer in cache.layers]
    model.decode(torch.full((2, 1), 5), states, mask, cache)
    assert all(layer.cross_kv[0] is k for layer, k in zip(cache.layers, cross, strict=True))
    assert cache.layers[0].self_kv.shape == (2, 2, TINY["num_heads"], 2, TINY["d_model"] // TINY["num_heads"])


@pytest.mark.parametrize("grad", [False, True])  # without a gradient the reorder gathers straight into the cache
@pytest.mark.parametrize("layout", ["one_row_per_source", "beams", "beams_of_fewer_sources"])
def test_cache_reorder_follows_rows(layout, grad):
    model = tiny_model()
    src, mask = padded_batch([7, 3, 5])
    rows_src, rows_mask, sources = src, mask, None
    if layout == "one_row_per_source":
        index = sources = torch.tensor([2, 2, 0])
    else:  # beam-search layout: two rows per source, moving only among that source's rows
        rows_src, rows_mask = src.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
        index = torch.tensor([1, 1, 2, 3, 5, 4])
        if layout == "beams_of_fewer_sources":  # the second source is finished: its rows and state leave
            index, sources = torch.tensor([1, 1, 5, 4]), torch.tensor([0, 2])
    tgt = torch.randint(3, VOCAB, (rows_src.size(0), 5))
    with torch.set_grad_enabled(grad):
        cache = model.new_cache()
        model.decode(tgt[:, :4], model.encode(src, mask), mask, cache)
        cache.reorder(index, sources)
        cache.reorder(torch.arange(index.size(0)))  # composes with the first
        kept = src if sources is None else src[sources]
        kept_mask = mask if sources is None else mask[sources]
        step = model.decode(tgt[index, 4:], model.encode(kept, kept_mask), kept_mask, cache)
        expected = model.decode(tgt[index], model.encode(rows_src[index], rows_mask[index]), rows_mask[index])[:, 4:]
    torch.testing.assert_close(step, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, DecoderCache)


def test_bf16_autocast_training_step_is_finite():
    model = tiny_model(std=0.02).train()
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src, mask, tgt[:, :-1])
        assert logits.dtype == torch.bfloat16  # upcast by the loss, chunk by chunk
        loss = smoothed_cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), smoothing=0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.eval().generate(src, mask, max_new_tokens=4, num_beams=2)
    assert out.shape[0] == 3


def test_forward_compiles_without_graph_breaks():
    model = tiny_model()
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(src, mask, tgt), model(src, mask, tgt))


def test_copy_attention_compiles_around_its_chunked_mixture():
    """`task.compile=true` with copy attention: the pointer mixture's loop over row chunks stays eager (traced, it
    unrolled into a C++ kernel the compiler took minutes over); the rest compiles, with the same outputs and
    gradients."""
    model = tiny_model(copy_attention=True, dropout=0.0).train()  # CPU dropout's in-place draw breaks graphs too
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    explanation = torch._dynamo.explain(model)(src, mask, tgt)
    assert explanation.graph_break_count >= 1
    assert all("pointer_mixture" in b.reason for b in explanation.break_reasons)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    out = compiled(src, mask, tgt)
    out.logsumexp(-1).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(src, mask, tgt)
    expected.logsumexp(-1).sum().backward()
    torch.testing.assert_close(out, expected)
    for grad, param in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(grad, param.grad)


@pytest.mark.parametrize("case", ["padding_mask", "causal", "cached_offset"])
def test_written_out_cpu_training_attention_equals_sdpa(case: str) -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5 if case != "cached_offset" else 2, 8, generator=generator) for _ in range(3))
    if case == "cached_offset":  # two new queries after a cached prefix of three keys
        k, v = torch.randn(2, 3, 5, 8, generator=generator), torch.randn(2, 3, 5, 8, generator=generator)
        mask, causal = torch.ones(2, 5, dtype=torch.bool).tril(diagonal=3), False
    elif case == "causal":
        mask, causal = None, True
    else:
        mask, causal = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])[:, None, None, :], False
    q.requires_grad_()  # training: the written-out path
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), q)
    got = attention(q, k, v, mask, causal)
    (grad,) = torch.autograd.grad(got.square().sum(), q)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_cpu_dropout_keeps_the_expected_share_and_mean() -> None:
    torch.manual_seed(0)
    dropout = Dropout(0.1).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x)
    kept = y.ne(0)
    assert kept.float().mean().item() == pytest.approx(0.9, abs=2e-3)
    assert y.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.9, rel=1e-4)]
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, y.detach())  # the same mask and scale backward
    torch.manual_seed(0)
    torch.testing.assert_close(Dropout(0.1).train()(x), y)  # seeded like any torch randomness
    assert torch.equal(dropout.eval()(x), x)


def test_training_flops_count_every_matrix_product_of_a_step() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_weaver(
        vocab_size=VOCAB, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=3, ffn_dim=48
    )
    src, tgt = torch.randint(3, VOCAB, (3, 7)), torch.randint(3, VOCAB, (3, 5))
    with FlopCounterMode(display=False) as counter:
        model(src, torch.ones_like(src, dtype=torch.bool), tgt).sum().backward()
    assert model.training_flops(3, 7, 5) == counter.get_total_flops()


def test_training_flops_count_attention_on_the_sdpa_path_too() -> None:
    """Past `CPU_EXPLICIT_ATTENTION_MAX_KEYS` keys, training attention runs in SDPA's fused kernel, whose products the
    FLOP counter does not see: counted through SDPA's math backend (the same products, written out), the model's
    own count must still match, masked keys and all."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from weaver.models.kernels import CPU_EXPLICIT_ATTENTION_MAX_KEYS

    model = build_weaver(vocab_size=VOCAB, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=1)
    source_length = CPU_EXPLICIT_ATTENTION_MAX_KEYS + 20
    for target_length in (5, CPU_EXPLICIT_ATTENTION_MAX_KEYS + 3):  # cross-attention alone, then self-attention too
        src, tgt = torch.randint(3, VOCAB, (2, source_length)), torch.randint(3, VOCAB, (2, target_length))
        mask = torch.ones_like(src, dtype=torch.bool)
        mask[1, -30:] = False
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            model(src, mask, tgt).sum().backward()
        assert model.training_flops(2, source_length, target_length) == counter.get_total_flops()


def test_activation_checkpointing_keeps_gradients_and_saves_memory() -> None:
    def saved_bytes_and_grads(checkpointing: bool) -> tuple[int, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = build_weaver(vocab_size=VOCAB, d_model=32, num_heads=4, ffn_dim=64, dropout=0.0)
        model.activation_checkpointing = checkpointing
        src, tgt = torch.randint(3, VOCAB, (4, 9)), torch.randint(3, VOCAB, (4, 7))
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = model(src, torch.ones_like(src, dtype=torch.bool), tgt).logsumexp(-1).mean()
        loss.backward()
        return sum(saved), [p.grad for p in model.parameters()]

    plain_bytes, plain_grads = saved_bytes_and_grads(False)
    checkpointed_bytes, checkpointed_grads = saved_bytes_and_grads(True)
    assert checkpointed_bytes < plain_bytes / 2
    for plain, checkpointed in zip(plain_grads, checkpointed_grads, strict=True):
        torch.testing.assert_close(checkpointed, plain)


# ---- copy attention (pointer-generator) -----------------------------------------------------------------------


def test_copy_attention_outputs_a_distribution_that_incremental_decoding_reproduces() -> None:
    model = tiny_model(copy_attention=True)
    src, mask = padded_batch([7, 3, 5])
    tgt = torch.randint(3, VOCAB, (3, 6))
    logprobs = model(src, mask, tgt)
    assert logprobs.dtype == torch.float32
    torch.testing.assert_close(logprobs.exp().sum(-1), torch.ones(3, 6))
    states, cache = model.encode(src, mask), model.new_cache()
    steps = [model.decode(tgt[:, i : i + 1], states, mask, cache, source_ids=src) for i in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), logprobs, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs the source_ids"):
        model.decode(tgt, states, mask)
    # What lies under the mask copies nothing, a real token's id too.
    hidden_under_mask = src.masked_fill(~mask.bool(), 0) + src[:, :1] * (1 - mask)
    torch.testing.assert_close(model(hidden_under_mask, mask, tgt), logprobs, rtol=0, atol=0)


@pytest.mark.parametrize("rows_per_chunk", [64, 3])
def test_copy_mixture_equals_the_dense_pointer_generator_formula_with_repeated_tokens(
    rows_per_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P = g * softmax(logits) + (1 - g) * (attention weights summed per source token), values and gradients,
    computed densely over the vocabulary as See et al. write it; in one chunk of rows and in several."""
    monkeypatch.setattr(pointer_mixture, "ROWS_PER_CHUNK", rows_per_chunk)
    torch.manual_seed(0)
    copy = build_weaver(VOCAB, **TINY, copy_attention=True).copy
    hidden = torch.randn(2, 5, TINY["d_model"], requires_grad=True)
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    keys = torch.randn(2, 6, TINY["d_model"], requires_grad=True)
    source_ids = torch.tensor([[7, 9, 7, 7, 2, 0], [4, 4, 5, 2, 0, 0]])  # repeats, then padding
    source_mask = source_ids.ne(0)

    scores = copy.query(hidden) @ keys.transpose(1, 2) * TINY["d_model"] ** -0.5
    weights = scores.masked_fill(~source_mask[:, None, :], float("-inf")).softmax(-1)
    copied = torch.zeros(2, 5, VOCAB).scatter_add(2, source_ids[:, None, :].expand(-1, 5, -1), weights)
    generate = torch.sigmoid(copy.gate(hidden))
    expected = (generate * logits.softmax(-1) + (1 - generate) * copied).log()

    actual = copy(hidden, logits, keys, source_ids, source_mask)
    torch.testing.assert_close(actual, expected)
    upstream = torch.randn_like(expected)
    for a, b in zip(
        torch.autograd.grad((actual * upstream).sum(), (hidden, logits, keys)),
        torch.autograd.grad((expected * upstream).sum(), (hidden, logits, keys)),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_a_closed_gate_puts_all_probability_on_the_source_tokens() -> None:
    model = tiny_model(copy_attention=True)
    with torch.no_grad():
        model.copy.gate.bias.fill_(-40.0)  # P(generate) ~ 0: copy only
    src, mask = padded_batch([7, 3])
    probs = model(src, mask, torch.randint(3, VOCAB, (2, 4))).exp()
    for row in range(2):
        in_source = torch.zeros(VOCAB, dtype=torch.bool)
        in_source[src[row][mask[row].bool()]] = True
        torch.testing.assert_close(probs[row][:, in_source].sum(-1), torch.ones(4))  # padding is never copied


def test_beams_sharing_their_source_decode_like_copies_of_it() -> None:
    model = tiny_model(copy_attention=True)
    src, mask = padded_batch([7, 3])
    tgt = torch.randint(3, VOCAB, (6, 5))  # three beams per source
    states = model.encode(src, mask)
    shared = model.decode(tgt, states, mask, source_ids=src)
    expanded = model.decode(
        tgt, states.repeat_interleave(3, 0), mask.repeat_interleave(3, 0), source_ids=src.repeat_interleave(3, 0)
    )
    torch.testing.assert_close(shared, expanded, rtol=1e-4, atol=1e-5)
    assert model.generate(src, mask, num_beams=3, max_new_tokens=5).shape[0] == 2


def test_copy_attention_learns_to_copy_its_source_far_sooner() -> None:
    """Copying random token sequences: with the copy path, 60 steps get most of the way; without, not."""

    def loss_after_training(copy: bool) -> float:
        torch.manual_seed(0)
        model = build_weaver(VOCAB, **TINY, dropout=0.0, copy_attention=copy).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(60):
            src = torch.randint(3, VOCAB, (32, 8), generator=generator)
            decoder_input = torch.cat([torch.full((32, 1), 1), src[:, :-1]], dim=1)
            logits = model(src, torch.ones_like(src, dtype=torch.bool), decoder_input)
            loss = smoothed_cross_entropy(logits.flatten(0, 1), src.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    copying, plain = loss_after_training(True), loss_after_training(False)
    assert copying < 0.5 * plain, (copying, plain)


def test_training_flops_count_the_copy_attention_too() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_weaver(vocab_size=VOCAB, **TINY, copy_attention=True)
    src, tgt = torch.randint(3, VOCAB, (3, 7)), torch.randint(3, VOCAB, (3, 5))
    with FlopCounterMode(display=False) as counter:
        model(src, torch.ones_like(src, dtype=torch.bool), tgt).sum().backward()
    assert model.training_flops(3, 7, 5) == counter.get_total_flops()
