"""The chunked cross-entropies (label-smoothed for training, summed for evaluation) equal PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weaver.tasks.loss import EVAL_ROWS_PER_CHUNK, ROWS_PER_CHUNK, example_nll, relevance_loss, smoothed_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_value_and_gradient_equal_torch_cross_entropy(dtype: torch.dtype, smoothing: float) -> None:
    generator = torch.Generator().manual_seed(0)
    rows = 3 * ROWS_PER_CHUNK + 5  # a partial last chunk
    logits = (4 * torch.randn(rows, 301, generator=generator)).to(dtype).requires_grad_()
    labels = torch.randint(0, 301, (rows,), generator=generator)
    labels[::7] = -100  # padding positions are ignored
    expected = F.cross_entropy(logits.float(), labels, ignore_index=-100, label_smoothing=smoothing)
    (expected_grad,) = torch.autograd.grad(expected * 3.0, logits)
    loss = smoothed_cross_entropy(logits, labels, smoothing=smoothing)
    (grad,) = torch.autograd.grad(loss * 3.0, logits)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert grad.dtype == dtype
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5  # bf16 gradients are rounded to 8 bits
    torch.testing.assert_close(grad.float(), expected_grad.float(), rtol=tolerance, atol=1e-7)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"expected logits \(N, V\) and labels \(N,\)"):
        smoothed_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_each_examples_evaluation_loss_equals_torch_cross_entropy_of_float_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    batch, length = 3, EVAL_ROWS_PER_CHUNK - 1  # chunks that cross examples, and a partial last chunk
    logits = (4 * torch.randn(batch, length, 31, generator=generator)).to(torch.bfloat16)
    labels = torch.randint(0, 31, (batch, length), generator=generator)
    labels[:, ::7] = -100
    labels[2] = -100  # an example without a target token sums to 0
    expected = [
        F.cross_entropy(logits[row].float(), labels[row], ignore_index=-100, reduction="sum") for row in range(2)
    ]
    torch.testing.assert_close(
        example_nll(logits, labels), torch.stack([*expected, torch.tensor(0.0)]), rtol=1e-6, atol=0.0
    )


def test_relevance_loss_is_minus_log_the_heads_average_mass_on_the_relevant_tokens() -> None:
    torch.manual_seed(0)
    layers = [torch.randn(3, 2, 4, 6, requires_grad=True) for _ in range(2)]  # (B, H, T, S)
    relevant = torch.tensor([[0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    target_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected = []
    for scores in layers:
        mass = (scores.softmax(-1) * relevant[:, None, None, :]).sum(-1).mean(1)[:2]  # the third row has no span
        expected.append(-(mass.log() * target_mask[:2]).sum() / target_mask[:2].sum())
    loss = relevance_loss(layers, relevant, target_mask)
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    loss.backward()
    assert all(torch.isfinite(scores.grad).all() and scores.grad[2].abs().sum() == 0 for scores in layers)


def test_relevance_loss_vanishes_when_attention_is_all_on_the_relevant_tokens_and_skips_rows_without_them() -> None:
    relevant = torch.tensor([[False, True, True]])
    scores = torch.tensor([-1e4, 0.5, 2.0]).expand(1, 2, 3, 3)
    assert relevance_loss([scores], relevant, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(0, abs=1e-6)
    nowhere = torch.zeros(1, 3, dtype=torch.bool)
    assert relevance_loss([scores], nowhere, torch.ones(1, 3, dtype=torch.bool)).item() == 0


def test_ignored_tokens_are_left_out_of_the_relevance_softmax() -> None:
    torch.manual_seed(1)
    scores = torch.randn(2, 2, 3, 5)
    relevant = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    ignored = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)  # a relevant token stays relevant
    targets = torch.ones(2, 3, dtype=torch.bool)
    without_first = relevance_loss([scores[..., 1:]], relevant[:, 1:], targets)
    torch.testing.assert_close(relevance_loss([scores], relevant, targets, ignored), without_first)
    high = scores.clone()
    high[..., 0] = 50.0  # all the attention on an ignored token costs nothing
    torch.testing.assert_close(relevance_loss([high], relevant, targets, ignored), without_first)


def test_relevance_loss_on_chosen_heads_is_the_loss_of_those_heads_alone() -> None:
    torch.manual_seed(2)
    layers = [torch.randn(2, 4, 3, 5) for _ in range(2)]
    relevant = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    targets = torch.ones(2, 3, dtype=torch.bool)
    chosen = relevance_loss(layers, relevant, targets, heads=[0, 2])
    torch.testing.assert_close(chosen, relevance_loss([scores[:, [0, 2]] for scores in layers], relevant, targets))
    assert chosen != relevance_loss(layers, relevant, targets)
    free = [scores.clone() for scores in layers]
    for scores in free:
        scores[:, 1, :, 0] = 50.0  # an unsupervised head looking off the relevant tokens costs nothing
    torch.testing.assert_close(relevance_loss(free, relevant, targets, heads=[0, 2]), chosen)
