"""Memory and recall: windowed encoding, top-k cross-attention, and their exactness against one pass and full
attention."""

import pytest
import torch

from tests.models.test_weaver_model import TINY, VOCAB, padded_batch, tiny_model
from tests.models.tiny_hf import fast_tokenizer
from weaver.errors import ConfigError
from weaver.models import IA3, LoRA, WeaverModel, build_weaver, load_weaver
from weaver.models.memory import (
    MemoryConfig,
    encode_in_windows,
    memory_from_settings,
    prefix_lengths,
    source_windows,
    window_layout,
)
from weaver.models.recall import folded_recall_attention, recall_attention

PREFIX_END = 2  # the token ending a prefix in the tests that use one: never among padded_batch's random tokens
SEGMENT_START = 1  # the token starting a segment, likewise


def with_memory(model: WeaverModel, **memory) -> WeaverModel:
    """The same weights with memory settings (memory adds no parameters)."""
    twin = tiny_model(
        memory=memory, max_positions=model.config.max_positions, copy_attention=model.config.copy_attention
    )
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def test_window_layout_ends_the_last_window_at_the_source_end_and_splits_halfway_between_centres():
    starts, ends, boundaries = window_layout(
        torch.tensor([300, 100, 40]), torch.tensor([0, 0, 0]), window=128, stride=64
    )
    assert starts.tolist() == [[0, 64, 128, 172], [0, -1, -1, -1], [0, -1, -1, -1]]
    assert ends.tolist() == [[128, 192, 256, 300], [100, -1, -1, -1], [40, -1, -1, -1]]
    # Centres 63.5, 127.5, 191.5, 235.5: position 96 is nearer the second window's centre, 95 the first's.
    assert boundaries[0].tolist() == [96, 160, 214]


def test_every_token_is_kept_from_the_window_where_it_sits_most_centrally():
    lengths, window, stride = torch.tensor([300]), 128, 64
    starts, _, boundaries = window_layout(lengths, torch.tensor([0]), window, stride)
    owner = torch.searchsorted(boundaries, torch.arange(300)[None], right=True)[0]
    for position in range(300):
        windows = [int(s) for s in starts[0] if 0 <= s <= position < s + window]
        margin = [min(position - s, s + window - 1 - position) for s in windows]
        chosen = int(starts[0, owner[position]])
        assert min(position - chosen, chosen + window - 1 - position) == max(margin)


def test_windows_never_cross_a_segment_start():
    # Body of 100: segments [0, 10), [10, 50), [50, 100); windows of 16, stride 8.
    starts, ends, boundaries = window_layout(torch.tensor([100]), torch.tensor([0]), 16, 8, [[10, 50]])
    assert starts.tolist() == [[0, 10, 18, 26, 34, 50, 58, 66, 74, 82, 84]]
    assert ends.tolist() == [[10, 26, 34, 42, 50, 66, 74, 82, 90, 98, 100]]
    # Each segment's first window takes over at its start; inside one, halfway between centres as without segments.
    assert boundaries.tolist() == [[10, 22, 30, 38, 50, 62, 70, 78, 86, 91]]


def test_each_segment_is_encoded_as_if_it_were_the_whole_source():
    """With a prefix and segments, each segment's states are those of the prefix and that segment alone, read in
    windows where it is longer than one: a document among many is encoded as it would be on its own."""
    model = with_memory(tiny_model(), window=16, stride=8, prefix_token_id=PREFIX_END, segment_token_id=SEGMENT_START)
    ids, mask = padded_batch([65, 30])
    ids[:, 4] = PREFIX_END  # both sources: a prefix of 5 tokens
    ids[0, [5, 15, 45]] = SEGMENT_START  # segments of 10, 30 and 20 tokens
    ids[1, [5, 20]] = SEGMENT_START  # 15 and 10, the last cut by padding
    memory = model.encode(ids, mask)
    for row, segments in ((0, [(5, 15), (15, 45), (45, 65)]), (1, [(5, 20), (20, 30)])):
        for start, end in segments:
            alone = torch.cat([ids[row : row + 1, :5], ids[row : row + 1, start:end]], 1)
            encoded = model.encode(alone, torch.ones_like(alone))
            torch.testing.assert_close(memory[row, start:end], encoded[0, 5:])
            if start == 5:  # the prefix's states come from the first segment's window
                torch.testing.assert_close(memory[row, :5], encoded[0, :5])
    assert memory[1, 30:].abs().sum() == 0


def test_tokens_before_the_first_segment_token_are_read_with_the_first_segment():
    """A space the tokenizer kept between the query and the first document is no window of its own."""
    model = with_memory(tiny_model(), window=16, stride=8, prefix_token_id=PREFIX_END, segment_token_id=SEGMENT_START)
    ids, mask = padded_batch([30])
    ids[0, 4], ids[0, [6, 20]] = PREFIX_END, SEGMENT_START  # body: a stray token, then documents of 14 and 10 tokens
    _, starts, ends, _ = source_windows(ids, mask, model.config.memory)
    assert starts.tolist() == [[0, 15]] and ends.tolist() == [[15, 25]]
    first = model.encode(ids[:, :20], mask[:, :20])  # the prefix, the stray token and the first document alone
    torch.testing.assert_close(model.encode(ids, mask)[:, :20], first)


def test_sources_without_segment_tokens_are_windowed_as_before():
    plain = with_memory(tiny_model(), window=16, stride=8)
    segmented = with_memory(plain, window=16, stride=8, segment_token_id=SEGMENT_START)
    ids, mask = padded_batch([40, 12])
    torch.testing.assert_close(segmented.encode(ids, mask), plain.encode(ids, mask))


def test_encoding_in_one_window_equals_one_pass_encoding():
    model = tiny_model()
    long_window = with_memory(model, window=64, stride=32)
    ids, mask = padded_batch([40, 25, 33])
    torch.testing.assert_close(long_window.encode(ids, mask), model.encode(ids, mask) * mask[..., None])


def test_each_window_state_equals_encoding_that_window_alone():
    """Checked by hand for a three-window source: every kept state is the one-pass state of its own window."""
    model = with_memory(tiny_model(), window=16, stride=8)
    ids, mask = padded_batch([30, 12])
    memory = model.encode(ids, mask)
    # Source of 30: windows start at 0, 8, 14; boundaries at body positions 12 and 19.
    alone = {
        start: model._encode_window(ids[:1, start : start + 16], mask[:1, start : start + 16]) for start in (0, 8, 14)
    }
    for position in range(30):
        start = 0 if position < 12 else 8 if position < 19 else 14
        torch.testing.assert_close(memory[0, position], alone[start][0, position - start])
    torch.testing.assert_close(memory[1, :12], model._encode_window(ids[1:, :12], mask[1:, :12])[0])


def test_a_prefix_starts_every_window_and_its_states_come_from_the_first():
    model = with_memory(tiny_model(), window=16, stride=8)
    model.config.memory.prefix_token_id = PREFIX_END
    ids, mask = padded_batch([40])
    ids[0, 4] = PREFIX_END  # prefix: the first 5 tokens
    assert prefix_lengths(ids, mask, PREFIX_END).tolist() == [5]
    memory = model.encode(ids, mask)
    first = model._encode_window(ids[:, :21], mask[:, :21])
    torch.testing.assert_close(memory[0, :12], first[0, :12])
    # The body's second window starts at body position 8 (source 13), read after the 5 prefix tokens.
    second = torch.cat([ids[:, :5], ids[:, 13:29]], 1)
    torch.testing.assert_close(memory[0, 5 + 12], model._encode_window(second, torch.ones_like(second))[0, 5 + 12 - 8])


def test_a_prefix_that_pushes_windows_past_the_positions_names_the_window():
    model = with_memory(tiny_model(), window=64, stride=32, prefix_token_id=PREFIX_END)
    ids, mask = padded_batch([100])
    ids[0, 9] = PREFIX_END
    with pytest.raises(ConfigError, match="prefix of 10 tokens plus model.memory.window=64 make windows of 74 tokens"):
        model.encode(ids, mask)


def test_sources_longer_than_the_positions_encode_with_memory_only():
    model = tiny_model()
    ids, mask = padded_batch([200, 90])
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(ids, mask)
    memory = with_memory(model, window=64, stride=48).encode(ids, mask)
    assert memory.shape == (2, 200, TINY["d_model"]) and memory.isfinite().all()


@pytest.mark.parametrize("fold_keys", [False, True])
def test_recall_covering_the_memory_equals_full_cross_attention(fold_keys):
    model = tiny_model()
    recalling = with_memory(model, window=64, stride=32, top_k=64, fold_keys=fold_keys)
    ids, mask = padded_batch([40, 25])
    target = torch.randint(4, VOCAB, (2, 7))
    torch.testing.assert_close(recalling(ids, mask, target), model(ids, mask, target), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fold_keys", [False, True])
def test_an_all_padding_source_reads_nothing_with_recall_as_with_full_attention(fold_keys):
    """Called directly, a model may get a row without real tokens: every entry's score is -inf (NaN weights)."""
    model = tiny_model()
    ids, mask = padded_batch([40, 25])
    ids[1], mask[1] = 0, 0
    target = torch.randint(4, VOCAB, (2, 7))
    with torch.no_grad():  # SDPA's fused kernel reads nothing there (its math kernel, taken with grad, gives NaN)
        reference = model(ids, mask, target)[1]
    for top_k in (4, 64):
        recalled = with_memory(model, window=64, stride=32, top_k=top_k, fold_keys=fold_keys)(ids, mask, target)
        torch.testing.assert_close(recalled[1], reference)
    # A batch of nothing but such rows: windows of no real token.
    with torch.no_grad():
        alone = model(ids[1:], mask[1:], target[1:])[0]
        recalled = with_memory(model, window=64, stride=32, top_k=4, fold_keys=fold_keys)(ids[1:], mask[1:], target[1:])
    torch.testing.assert_close(recalled[0], alone)


@pytest.mark.parametrize("search", [dict(num_beams=1), dict(num_beams=4), dict(do_sample=True, seed=3)])
@pytest.mark.parametrize("fold_keys", [False, True])
def test_recall_covering_the_memory_generates_what_full_attention_does(search, fold_keys):
    model = tiny_model()
    recalling = with_memory(model, window=64, stride=32, top_k=64, fold_keys=fold_keys)
    ids, mask = padded_batch([40, 25, 33])
    settings = dict(max_new_tokens=12, **search)
    assert torch.equal(recalling.generate(ids, mask, **settings), model.generate(ids, mask, **settings))


@pytest.mark.parametrize("method", [LoRA(r=4, dropout=0.0), IA3()])
def test_folded_recall_applies_and_trains_an_adapter_on_the_cross_attention_projection(method):
    """Folding reads the key and value projection's weights: an adapter wrapping it (on `kv`, a default target)
    must change them, as it changes the layer's outputs, and receive their gradients."""
    model = tiny_model()
    adapted = {}
    for fold_keys in (False, True):
        torch.manual_seed(0)
        adapted[fold_keys] = method(with_memory(model, window=16, stride=8, top_k=64, fold_keys=fold_keys))
        with torch.no_grad():  # a non-zero update (LoRA's B and IA3's scales start as the identity update)
            for name, parameter in adapted[fold_keys].named_parameters():
                if "lora_B" in name or "ia3_l" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    ids, mask = padded_batch([40, 25])
    target = torch.randint(4, VOCAB, (2, 7))
    logits = {fold_keys: peft_model(ids, mask, target) for fold_keys, peft_model in adapted.items()}
    torch.testing.assert_close(logits[True], logits[False], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[True], model(ids, mask, target), atol=1e-2)
    logits[True].logsumexp(-1).mean().backward()
    adapter_gradients = [
        parameter.grad
        for name, parameter in adapted[True].named_parameters()
        if "cross_attn.kv" in name and parameter.requires_grad
    ]
    assert adapter_gradients and all(
        gradient is not None and gradient.abs().sum() > 0 for gradient in adapter_gradients
    )


def test_folded_and_cached_recall_fetch_the_same_entries():
    torch.manual_seed(0)
    batch, heads, length, width, sources = 2, 4, 5, 8, 30
    q, states = torch.randn(batch, heads, length, width), torch.randn(batch, sources, heads * width)
    key, value = torch.nn.Linear(heads * width, heads * width), torch.nn.Linear(heads * width, heads * width)
    mask = torch.ones(batch, 1, 1, sources, dtype=torch.bool)
    mask[1, ..., 20:] = False
    split = lambda t: t.unflatten(-1, (heads, width)).transpose(1, 2)  # noqa: E731
    cached = recall_attention(q, split(key(states)), split(value(states)), mask, top_k=6)
    folded = folded_recall_attention(q, states, key.weight, key.bias, value.weight, value.bias, mask, top_k=6)
    torch.testing.assert_close(folded, cached)


def test_recall_attends_only_to_the_best_scoring_entries():
    q = torch.tensor([[[[1.0, 0.0]]]])  # (1, 1, 1, 2)
    k = torch.tensor([[[[5.0, 0.0], [4.0, 0.0], [-9.0, 0.0], [0.0, 0.0]]]])
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [100.0, 100.0], [100.0, 100.0]]]])
    out = recall_attention(q, k, v, torch.ones(1, 1, 1, 4, dtype=torch.bool), top_k=2)
    weights = torch.tensor([5.0, 4.0]).div(2**0.5).softmax(0)
    torch.testing.assert_close(out[0, 0, 0], weights)


def test_gradients_reach_every_parameter_through_windows_and_recall():
    model = with_memory(tiny_model(), window=16, stride=8, top_k=4).train()
    ids, mask = padded_batch([50, 30])
    model(ids, mask, torch.randint(4, VOCAB, (2, 6))).logsumexp(-1).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_checkpointed_windows_give_the_same_gradients():
    ids, mask = padded_batch([50, 30])
    target = torch.randint(4, VOCAB, (2, 6))
    grads = []
    for checkpointing in (False, True):
        model = with_memory(tiny_model(), window=16, stride=8, top_k=4, window_batch_size=2).train()
        model.config.dropout = 0.0
        model.activation_checkpointing = checkpointing
        for module in model.modules():
            if hasattr(module, "p"):
                module.p = 0.0
        model(ids, mask, target).logsumexp(-1).mean().backward()
        grads.append(model.embed.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_full_training_mode_uses_full_cross_attention_in_training_only():
    model = with_memory(tiny_model(), window=64, stride=32, top_k=2, training="full")
    assert model.recall is not None
    assert model.train().recall is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(top_k=0), "model.memory.top_k must be a positive integer"),
        (dict(window=128), "model.memory.window=128 exceeds model.max_positions=64"),
        (dict(window=32, stride=32), "model.memory.stride=32 must be smaller than model.memory.window=32"),
        (dict(training="sometimes"), "model.memory.training must be one of"),
        (dict(windows=3), r"model.memory: unknown key\(s\) \['windows'\]"),
    ],
)
def test_bad_memory_settings_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model(memory={"window": 32, "stride": 16, **settings})


def test_an_unknown_memory_setting_lists_the_keys_the_config_takes():
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['topk'\]; known keys are \[.*'prefix_token', .*'segment_token', "
    ):
        memory_from_settings({"window": 32, "topk": 4})


@pytest.mark.parametrize("name", ["prefix_token", "segment_token"])
def test_marker_tokens_are_looked_up_in_the_tokenizer_and_a_missing_one_names_the_key(name):
    tokenizer = fast_tokenizer("t5")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<doc>"]})
    settings = {"window": 32, "stride": 16, name: "<doc>"}
    assert getattr(memory_from_settings(settings, tokenizer), f"{name}_id") == tokenizer.convert_tokens_to_ids("<doc>")
    with pytest.raises(ConfigError, match=rf"model.memory.{name}='<part>' is not a token of the tokenizer"):
        memory_from_settings({**settings, name: "<part>"}, tokenizer)


def test_copying_from_a_memory_covered_by_top_k_equals_copying_from_the_whole_source():
    model = tiny_model(copy_attention=True)
    recalling = with_memory(model, window=64, stride=32, top_k=64)
    ids, mask = padded_batch([40, 25])
    ids[0, 5:9] = ids[0, 20:24]  # repeated tokens: copied with the sum of their weights
    target = torch.randint(4, VOCAB, (2, 7))
    torch.testing.assert_close(recalling(ids, mask, target), model(ids, mask, target), atol=1e-4, rtol=1e-4)
    settings = dict(num_beams=3, max_new_tokens=10)
    assert torch.equal(recalling.generate(ids, mask, **settings), model.generate(ids, mask, **settings))


def test_copying_with_recall_takes_only_the_top_k_source_tokens_and_trains():
    model = with_memory(tiny_model(copy_attention=True), window=32, stride=16, top_k=4).train()
    ids, mask = padded_batch([120, 90])
    target = torch.randint(4, VOCAB, (2, 6))
    log_probs = model(ids, mask, target)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 6))  # still one distribution per position
    # Through the fetched tokens (all among the source's), gradients reach the copy scores.
    log_probs.gather(-1, ids[:, None, :].expand(-1, 6, -1)).sum().backward()
    assert model.copy.query.weight.grad.abs().sum() > 0 and model.copy.key.weight.grad.abs().sum() > 0
    # Only the fetched tokens gain copy probability: with 4 per position, at most 4 token ids per row move.
    hidden = torch.randn(2, 6, TINY["d_model"])
    logits = torch.zeros(2, 6, VOCAB)
    keys = torch.randn(2, 120, TINY["d_model"])
    with torch.no_grad():
        out = model.copy(hidden, logits, keys, ids, mask, top_k=4)
    boosted = (out > torch.log_softmax(logits, -1) + 1e-6).sum(-1)
    assert boosted.max() <= 4 and boosted.min() >= 1


def test_source_length_past_the_positions_needs_memory():
    with pytest.raises(ConfigError, match=r"data.max_source_length=100 exceeds model.max_positions=64.*memory=recall"):
        build_weaver(VOCAB, max_source_length=100, **TINY)
    with pytest.raises(ConfigError, match="data.max_target_length=65 exceeds model.max_positions=64"):
        build_weaver(VOCAB, max_target_length=65, **TINY)
    model = build_weaver(VOCAB, max_source_length=65536, memory={"window": 64, "stride": 32}, **TINY)
    assert model.config.memory == MemoryConfig(window=64, stride=32)


def test_memory_settings_survive_export(tmp_path):
    model = tiny_model(memory={"window": 32, "stride": 16, "top_k": 5, "fold_keys": True})
    model.save_pretrained(tmp_path)
    assert WeaverModel.from_pretrained(tmp_path).config.memory == model.config.memory


def test_encode_in_windows_works_for_any_encoder():
    """The windowing only needs a function from (ids, mask) to states: the HF wrapper passes its encoder."""

    def encode(ids, mask):
        return torch.stack([ids.float(), mask.float()], -1)

    ids, mask = padded_batch([37, 20])
    memory = encode_in_windows(encode, ids, mask, MemoryConfig(window=8, stride=5))
    torch.testing.assert_close(memory[..., 0], (ids * mask).float())


def test_a_saved_models_memory_is_kept_changed_key_by_key_or_turned_off(tmp_path):
    tiny_model(memory={"window": 16, "stride": 8, "top_k": 4}).save_pretrained(tmp_path)
    saved = {"saved": True}  # memory=saved, model=weaver_pretrained's default
    assert load_weaver(str(tmp_path), memory=saved).config.memory == MemoryConfig(window=16, stride=8, top_k=4)
    changed = load_weaver(str(tmp_path), memory={**saved, "top_k": 64}).config.memory
    assert changed == MemoryConfig(window=16, stride=8, top_k=64)
    assert load_weaver(str(tmp_path), memory=None).config.memory is None  # memory=none
    assert load_weaver(str(tmp_path), memory={"window": 32, "stride": 16}).config.memory == MemoryConfig(32, 16)
    tiny_model().save_pretrained(tmp_path / "without")
    assert load_weaver(str(tmp_path / "without"), memory=saved).config.memory is None
    with pytest.raises(ConfigError, match="memory=saved keeps the memory settings saved with model.init_from"):
        build_weaver(VOCAB, memory=saved, **TINY)
    # A marker given, even null, replaces the saved one.
    tiny_model(memory={"window": 16, "stride": 8, "prefix_token_id": PREFIX_END}).save_pretrained(tmp_path / "prefix")
    assert load_weaver(str(tmp_path / "prefix"), memory=saved).config.memory.prefix_token_id == PREFIX_END
    assert (
        load_weaver(str(tmp_path / "prefix"), memory={**saved, "prefix_token": None}).config.memory.prefix_token_id
        is None
    )
