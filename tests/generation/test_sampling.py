"""Per-row random streams: each row's draws follow its tempered, filtered distribution and belong to the row."""

from __future__ import annotations

import torch

from weaver.generation import GenerationConfig, RowStreams

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def frequencies(config: GenerationConfig, draws: int = 20000) -> torch.Tensor:
    """How often each token is drawn: one row per draw, each a source of its own."""
    sources = torch.arange(draws)[:, None]
    streams = RowStreams(config, sources, torch.ones_like(sources, dtype=torch.bool), per_source=1)
    chosen = streams.choose(LOGITS.expand(draws, -1), list(range(draws)), step=0)
    return torch.bincount(chosen, minlength=LOGITS.numel()).double() / draws


def test_draws_follow_the_tempered_and_filtered_distribution() -> None:
    for settings in ({}, {"temperature": 0.5}, {"top_k": 3}, {"top_p": 0.7}):
        config = GenerationConfig(do_sample=True, seed=11, **settings)
        logits = LOGITS / config.temperature
        if config.top_k:
            logits = logits.masked_fill(logits < logits.topk(config.top_k).values[-1], float("-inf"))
        if config.top_p < 1:  # the most likely token holds 0.56 of the mass, the two most 0.77: both, alone
            logits = logits.masked_fill(torch.arange(LOGITS.numel()) >= 2, float("-inf"))
        expected = logits.softmax(-1).double()
        observed = frequencies(config)
        assert (observed[expected == 0] == 0).all()  # a filtered-out token is never drawn
        assert torch.allclose(observed, expected, atol=0.015), (settings, observed, expected)


def test_a_rows_draws_depend_on_its_source_sample_and_step_alone() -> None:
    config = GenerationConfig(do_sample=True, seed=3, mbr_num_samples=2)
    sources = torch.tensor([[5, 6, 0], [7, 8, 9]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    streams = RowStreams(config, sources, mask, per_source=2)
    moved = RowStreams(config, sources.flip(0), mask.flip(0), per_source=2)
    alone = RowStreams(config, torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.bool), per_source=2)
    first = streams.uniforms([0, 1, 2, 3], step=4, device=torch.device("cpu"))
    assert torch.equal(moved.uniforms([2, 3, 0, 1], step=4, device=torch.device("cpu")), first)
    assert torch.equal(alone.uniforms([0, 1], step=4, device=torch.device("cpu")), first[:2])
    assert len(set(first.tolist())) == 4  # each sample of each source has its own stream
    assert not torch.equal(streams.uniforms([0, 1, 2, 3], step=5, device=torch.device("cpu")), first)
    other_seed = RowStreams(GenerationConfig(do_sample=True, seed=4, mbr_num_samples=2), sources, mask, per_source=2)
    assert not torch.equal(other_seed.uniforms([0, 1, 2, 3], step=4, device=torch.device("cpu")), first)
