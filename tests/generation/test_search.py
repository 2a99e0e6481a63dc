"""Decoding: greedy / beam / sampling over the `Seq2SeqModel` protocol, and `GenerationConfig` checks."""

import pytest
import torch
import torch.nn.functional as F

from weaver.errors import ConfigError
from weaver.generation import (
    GenerationConfig,
    ban_repeated_ngrams_,
    beam_search,
    filter_logits,
    generate,
    greedy_search,
)
from weaver.models import WeaverModel, build_weaver

TINY = dict(d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64, max_positions=64)
PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("single_thread")


def random_model(vocab: int = 50, seed: int = 0, std: float = 0.2) -> WeaverModel:
    """Random tiny model; the large init gives input-dependent, fairly peaked outputs."""
    torch.manual_seed(seed)
    model = build_weaver(vocab, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def copy_batch(n: int, vocab: int, gen: torch.Generator, max_len: int = 6):
    """Sources of 2..max_len tokens; the target is the source followed by EOS."""
    lengths = torch.randint(2, max_len + 1, (n,), generator=gen)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    src = torch.randint(3, vocab, (n, max_len), generator=gen).masked_fill(~mask, PAD)
    target = torch.cat([src, torch.full((n, 1), PAD)], 1)
    target[torch.arange(n), lengths] = EOS
    return src, mask.long(), target


@pytest.fixture(scope="module")
def copy_model() -> WeaverModel:
    """A small model trained for a few seconds to copy its input (~99% exact): it emits EOS. Trained past the loss
    spike that 3e-3 gives around step 400 on some CPUs' kernels (exact copies fell to 54% there on one)."""
    torch.manual_seed(0)
    model = build_weaver(20, **{**TINY, "d_model": 64, "ffn_dim": 128}, dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        src, mask, target = copy_batch(64, 20, gen)
        decoder_input = torch.cat([torch.full((64, 1), BOS), target[:, :-1]], 1)
        logits = model(src, mask, decoder_input)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def assert_finished_and_padded(out: torch.Tensor) -> None:
    """Every row has one EOS, followed only by padding, and the output ends at the longest one."""
    is_eos = out == EOS
    assert (is_eos.sum(1) == 1).all()
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    assert (out[after_eos] == PAD).all() and not (out[~after_eos] == PAD).any()
    assert is_eos[:, -1].any()


def padded_sources(lengths: list[int], vocab: int = 50, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    src = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=gen).masked_fill(~mask, PAD)
    return src, mask.long()


class Recorder:
    """Any object with encode/decode/new_cache/config works; this one counts calls and can force EOS.

    ``eos_at[i]``: source i's EOS is forced as its generated token number ``eos_at[i]`` (else banned).
    """

    def __init__(self, model, eos_at=None, eos_bias=0.0):
        self.model, self.config, self.eos_at, self.eos_bias = model, model.config, eos_at, eos_bias
        self.encoded_rows, self.decoded_rows, self.decode_calls = [], [], 0

    def encode(self, input_ids, attention_mask):
        self.encoded_rows.append(input_ids.size(0))
        self.sources = input_ids
        return self.model.encode(input_ids, attention_mask)

    def new_cache(self):
        return self.model.new_cache()

    def decode(self, decoder_input_ids, encoder_states, encoder_attention_mask, cache=None, source_ids=None):
        self.decode_calls += 1
        self.decoded_rows.append(decoder_input_ids.size(0))
        logits = self.model.decode(decoder_input_ids, encoder_states, encoder_attention_mask, cache, source_ids)
        logits[..., EOS] += self.eos_bias
        if self.eos_at is not None:  # cache.length == number of the token being predicted
            # Which source each row decodes (finished ones leave the batch), the beams of a source together.
            source = (source_ids[:, None] == self.sources[None]).all(-1).to(torch.uint8).argmax(1)
            eos_at = torch.tensor(self.eos_at)[source].repeat_interleave(logits.size(0) // source.size(0))
            force = eos_at == cache.length
            logits[:, -1, EOS] = torch.where(force, 1e4, -1e4)
        return logits


def reference_greedy(model, src, mask, max_new_tokens):
    """Greedy decoding the slow way: re-run the whole prefix, no cache."""
    states = model.encode(src, mask)
    tokens = torch.full((src.size(0), 1), BOS)
    finished = torch.zeros(src.size(0), dtype=torch.bool)
    for _ in range(max_new_tokens):
        next_tokens = model.decode(tokens, states, mask)[:, -1].argmax(-1).masked_fill(finished, PAD)
        tokens = torch.cat([tokens, next_tokens[:, None]], 1)
        finished |= next_tokens == EOS
        if finished.all():
            break
    return tokens[:, 1:]


def sequence_scores(model, src, mask, out):
    """Sum of token log-probs of each output up to and including its first EOS, and that length."""
    decoder_input = torch.cat([torch.full((out.size(0), 1), BOS), out[:, :-1]], 1)
    logits = model.decode(decoder_input, model.encode(src, mask), mask)
    logprobs = logits.log_softmax(-1).gather(-1, out[..., None]).squeeze(-1)
    is_eos = (out == EOS).long()
    counted = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first EOS
    return (logprobs * counted).sum(1), counted.sum(1)


def has_repeated_ngram(seq: list[int], n: int) -> bool:
    ngrams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def strip(seq: torch.Tensor) -> list[int]:
    return [t for t in seq.tolist() if t != PAD]


# --- greedy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["random", "copy"])
def test_cached_greedy_matches_uncached_reference(which, copy_model):
    model = copy_model if which == "copy" else random_model()
    vocab = model.config.vocab_size
    src, mask = padded_sources([6, 2, 4, 5], vocab=vocab)
    out = greedy_search(model, src, mask, GenerationConfig(max_new_tokens=10))
    assert torch.equal(out, reference_greedy(model, src, mask, 10))


def test_copy_model_copies_and_stops_at_eos(copy_model):
    src, mask, target = copy_batch(16, 20, torch.Generator().manual_seed(5))
    out = copy_model.generate(src, mask, max_new_tokens=12)
    assert_finished_and_padded(out)  # and the loop stopped once every sequence had its EOS
    assert out.size(1) <= target.size(1)
    assert (out == target[:, : out.size(1)]).all(1).float().mean() >= 0.75  # it did learn to copy


def test_eos_stops_each_sequence_and_pads_after_it():
    recorder = Recorder(random_model(), eos_at=[3, 1, 5])
    src, mask = padded_sources([4, 4, 3])
    out = generate(recorder, src, mask, GenerationConfig(max_new_tokens=20))
    assert out.shape == (3, 5) and recorder.decode_calls == 5  # the whole loop stops when all are done
    assert recorder.decoded_rows == [3, 2, 2, 1, 1]  # and each source leaves the batch once it has its EOS
    assert recorder.encoded_rows == [3]
    for row, eos_at in zip(out.tolist(), [3, 1, 5], strict=True):
        assert row[eos_at - 1] == EOS and EOS not in row[: eos_at - 1]
        assert all(t == PAD for t in row[eos_at:])


def test_max_new_tokens_is_respected():
    src, mask = padded_sources([4, 6])
    for config in [
        GenerationConfig(max_new_tokens=7),
        GenerationConfig(max_new_tokens=7, num_beams=3),
        GenerationConfig(max_new_tokens=7, do_sample=True, seed=0),
    ]:
        out = generate(Recorder(random_model(), eos_at=[99, 99]), src, mask, config)
        assert out.shape == (2, 7) and not (out == EOS).any()


def test_min_new_tokens_delays_eos(copy_model):
    src, mask, _ = copy_batch(4, 20, torch.Generator().manual_seed(3), max_len=2)
    for beams in (1, 3):
        out = copy_model.generate(src, mask, max_new_tokens=8, min_new_tokens=5, num_beams=beams)
        assert out.size(1) >= 5 and not (out[:, :5] == EOS).any()


# --- beam search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ngram", [0, 2])
def test_one_beam_is_exactly_greedy(ngram, copy_model):
    for model in (random_model(), copy_model):
        src, mask = padded_sources([6, 2, 4, 5], vocab=model.config.vocab_size)
        config = GenerationConfig(max_new_tokens=10, num_beams=1, no_repeat_ngram_size=ngram)
        assert torch.equal(beam_search(model, src, mask, config), greedy_search(model, src, mask, config))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_scores_at_least_greedy(length_penalty, copy_model):
    model = random_model(std=0.3)
    src, mask = padded_sources([6, 2, 4, 5, 3, 6])
    config = GenerationConfig(max_new_tokens=6, length_penalty=length_penalty)
    greedy = greedy_search(model, src, mask, config)
    beam = beam_search(model, src, mask, GenerationConfig(**{**config.to_dict(), "num_beams": 4}))
    (greedy_sum, greedy_len), (beam_sum, beam_len) = (sequence_scores(model, src, mask, o) for o in (greedy, beam))
    greedy_score = greedy_sum / greedy_len.float() ** length_penalty
    beam_score = beam_sum / beam_len.float() ** length_penalty
    assert (beam_score >= greedy_score - 1e-4).all()
    assert (beam_score > greedy_score + 1e-3).any()  # the search does find better hypotheses

    src, mask, _ = copy_batch(6, 20, torch.Generator().manual_seed(7))
    out = copy_model.generate(src, mask, max_new_tokens=10, num_beams=4, length_penalty=length_penalty)
    assert_finished_and_padded(out)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("which", ["random", "copy"])
def test_beam_scores_match_teacher_forced_scores(which, length_penalty, copy_model):
    """The score beam search assigns its result must be the model's own score of those tokens."""
    model = copy_model if which == "copy" else random_model(std=0.3)
    src, mask = padded_sources([6, 2, 4, 5, 3], vocab=model.config.vocab_size)
    config = GenerationConfig(max_new_tokens=8, num_beams=5, length_penalty=length_penalty, min_new_tokens=2)
    out, scores = beam_search(model, src, mask, config, return_scores=True)
    total, length = sequence_scores(model, src, mask, out)
    torch.testing.assert_close(scores, total / length.float() ** length_penalty, rtol=1e-4, atol=1e-4)


def test_beam_search_rows_do_not_interact(copy_model):
    recorder = Recorder(copy_model)
    src, mask = padded_sources([6, 2, 4], vocab=20)
    config = GenerationConfig(max_new_tokens=9, num_beams=3)
    out = generate(recorder, src, mask, config)
    assert recorder.encoded_rows == [3]  # encoder runs once per source, not once per beam
    assert recorder.decoded_rows[0] == 9 and recorder.decoded_rows[-1] == 3  # the sources done first left the batch
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = beam_search(copy_model, src[i : i + 1, :n], mask[i : i + 1, :n], config)[0]
        assert torch.equal(alone, out[i, : len(alone)]) and (out[i, len(alone) :] == PAD).all()


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("kind", ["copy_attention", "memory"])
def test_sources_leaving_the_batch_keep_every_other_sources_result(kind, search):
    """Per-source state (cross-attention keys and values, copy keys, recall over the memory) follows the sources
    that stay in the batch as others finish: each output is the one that source gets decoded alone."""
    memory = {"window": 4, "stride": 2, "top_k": 3} if kind == "memory" else None
    torch.manual_seed(0)
    model = build_weaver(50, **TINY, copy_attention=kind == "copy_attention", memory=memory).eval()
    eos_at = [6, 2, 9, 4]
    src, mask = padded_sources([7, 5, 9, 6])
    config = GenerationConfig(max_new_tokens=12, num_beams=3 if search == "beam" else 1)
    recorder = Recorder(model, eos_at=eos_at)
    out, scores = beam_search(recorder, src, mask, config, return_scores=True)
    assert recorder.decoded_rows[-1] < recorder.decoded_rows[0]
    for i, n in enumerate(mask.sum(1).tolist()):
        alone = Recorder(model, eos_at=[eos_at[i]])
        expected, score = beam_search(alone, src[i : i + 1, :n], mask[i : i + 1, :n], config, return_scores=True)
        assert torch.equal(out[i, : expected.size(1)], expected[0]) and (out[i, expected.size(1) :] == PAD).all()
        torch.testing.assert_close(scores[i], score[0])
    if search == "greedy":  # greedy search's own loop, too
        assert torch.equal(greedy_search(Recorder(model, eos_at=eos_at), src, mask, config), out)


# --- n-gram blocking and sampling -----------------------------------------------------------------


def test_ban_repeated_ngrams_():
    tokens = torch.tensor([[1, 5, 6, 7, 5], [1, 5, 5, 5, 5]])
    scores = torch.arange(20.0).view(2, 10)
    ban_repeated_ngrams_(scores, tokens, 2)
    assert scores[0].isneginf().nonzero().flatten().tolist() == [6]  # "5 6" exists, the next token follows a 5
    assert scores[1].isneginf().nonzero().flatten().tolist() == [5]  # "5 5" several times: banned once
    kept = scores.isfinite()
    assert torch.equal(scores[kept], torch.arange(20.0).view(2, 10)[kept])  # every other score as it was
    unchanged = scores.clone()
    ban_repeated_ngrams_(scores, tokens[:, :2], 3)  # shorter than n: nothing to repeat
    assert torch.equal(scores, unchanged)


@pytest.mark.parametrize("extra", [{}, {"num_beams": 3}, {"do_sample": True, "seed": 0}])
def test_no_repeat_ngram_size_blocks_repeated_bigrams(extra):
    model = random_model(std=0.02)  # a near-uniform-input random model loops on the same tokens
    src, mask = padded_sources([6, 2, 4])
    if not extra.get("do_sample"):
        plain = generate(model, src, mask, GenerationConfig(max_new_tokens=15, **extra))
        assert any(has_repeated_ngram(strip(row), 2) for row in plain)
    blocked = generate(model, src, mask, GenerationConfig(max_new_tokens=15, no_repeat_ngram_size=2, **extra))
    assert not any(has_repeated_ngram([BOS] + strip(row), 2) for row in blocked)


def test_sampling_is_reproducible_with_a_seed():
    model = random_model()
    src, mask = padded_sources([6, 2, 4, 5])

    def run(seed, **kw):
        return generate(model, src, mask, GenerationConfig(max_new_tokens=10, do_sample=True, seed=seed, **kw))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    greedy = greedy_search(model, src, mask, GenerationConfig(max_new_tokens=10))
    assert torch.equal(run(3, top_k=1), greedy)
    assert torch.equal(run(4, top_p=1e-6), greedy)
    assert torch.equal(run(5, temperature=1e-4), greedy)


def test_seeded_samples_of_a_source_do_not_depend_on_its_batch():
    """Alone, beside other sources, at another row, with batch mates that finish early (and leave the batch) or
    never: a source's seeded samples are the same, each of its MBR samples too."""
    model = random_model()
    src, mask = padded_sources([6, 2, 4, 5])
    for samples in (0, 3):
        config = GenerationConfig(max_new_tokens=8, do_sample=True, seed=5, mbr_num_samples=samples)
        per_source = config.outputs_per_source
        eos_at = [3, 99, 1, 99]  # sources 0 and 2 end early; 1 and 3 never (EOS banned), as alone
        together = generate(Recorder(model, eos_at=eos_at), src, mask, config)
        for i in range(4):
            alone = generate(Recorder(model, eos_at=[99]), src[i : i + 1], mask[i : i + 1], config)
            mine = together[i * per_source : (i + 1) * per_source]
            same = min(eos_at[i] - 1, alone.size(1))  # the tokens before a forced EOS (token number eos_at)
            assert torch.equal(mine[:, :same], alone[:, :same])
        reversed_order = generate(Recorder(model, eos_at=[99, 1, 99, 3]), src.flip(0), mask.flip(0), config)
        assert torch.equal(reversed_order.view(4, per_source, -1).flip(0).view(4 * per_source, -1), together)
    assert not torch.equal(together[3], together[4])  # a source's MBR samples differ from each other


def test_mbr_samples_of_a_source_share_one_encoding():
    """MBR's samples of each source come side by side from one encoding of it, and a source leaves the batch only
    once all its samples have their EOS."""
    src, mask = padded_sources([6, 2, 4])
    config = GenerationConfig(max_new_tokens=6, do_sample=True, seed=0, mbr_num_samples=3)
    recorder = Recorder(random_model(), eos_at=[99, 99, 99])
    generate(recorder, src, mask, config)
    assert recorder.encoded_rows == [3]
    ending = Recorder(random_model(), eos_at=[2, 4, 3])
    out = generate(ending, src, mask, config)
    assert ending.decoded_rows == [9, 9, 6, 3] and out.shape == (9, 4)
    assert (out[:3, 1] == EOS).all() and (out[:3, 2:] == PAD).all()


def test_sampling_stops_at_eos():
    recorder = Recorder(random_model(), eos_at=[2, 4])
    src, mask = padded_sources([3, 5])
    out = generate(recorder, src, mask, GenerationConfig(max_new_tokens=9, do_sample=True, seed=0))
    assert out[:, 3:].tolist() == [[PAD], [EOS]] and out[0, 1] == EOS and out[0, 2:].eq(PAD).all()


def test_top_k_and_top_p_keep_only_allowed_tokens():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])  # probabilities ~ .03 .09 .23 .63 .01

    def kept(**filters):
        return filter_logits(logits, **filters).isfinite()[0].nonzero().flatten().tolist()

    assert kept(top_k=2) == [2, 3]
    assert kept(top_p=0.5) == [3]  # the most likely token alone already covers 0.5
    assert kept(top_p=0.7) == [2, 3]
    assert kept(top_k=1, top_p=0.7) == [3]

    model = random_model()
    src, mask = padded_sources([5])
    first = model.decode(torch.full((1, 1), BOS), model.encode(src, mask), mask)[0, -1]
    nucleus = filter_logits(first[None], top_p=0.6).isfinite()[0].nonzero().flatten()
    for filters, allowed in [({"top_k": 3}, first.topk(3).indices), ({"top_p": 0.6}, nucleus)]:
        # 300 draws of the first token for one source: as many samples of it, each from a stream of its own.
        config = GenerationConfig(max_new_tokens=1, do_sample=True, seed=0, mbr_num_samples=300, **filters)
        drawn = set(generate(model, src, mask, config)[:, 0].tolist())
        assert drawn <= set(allowed.tolist()) and len(drawn) > 1, (filters, drawn)


# --- GenerationConfig -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_new_tokens": 100}, r"min_new_tokens must be between 0 and generation.max_new_tokens \(64; set it"),
        ({"num_beams": 0}, "num_beams"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": 0.0}, "temperature"),
        ({"do_sample": True, "num_beams": 2}, "do_sample"),
        ({"length_penalty": "abc"}, "generation.length_penalty must be float, got 'abc'"),
        ({"num_beams": 2.5}, "generation.num_beams must be int, got 2.5"),
        ({"do_sample": 1}, "generation.do_sample must be bool, got 1"),
        ({"seed": True}, "generation.seed must be int"),
    ],
)
def test_generation_config_rejects_bad_values(bad, field):
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**bad)


def test_generation_config_round_trip_and_overrides():
    config = GenerationConfig(num_beams=4, length_penalty=0.6)
    assert GenerationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="num_beam"):
        GenerationConfig.from_dict({"num_beam": 4})
    model = random_model()
    src, mask = padded_sources([4, 3])
    assert torch.equal(
        model.generate(src, mask, config, max_new_tokens=3),
        beam_search(model, src, mask, GenerationConfig(num_beams=4, length_penalty=0.6, max_new_tokens=3)),
    )
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(src, mask, num_beams=0)
