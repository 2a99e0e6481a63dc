"""`task.compile=true`: compiled training repeats bit for bit, as eager training does."""

from __future__ import annotations

from functools import partial

import torch
from torch._inductor.utils import run_and_get_code

from tests.tasks.scripted import ScriptedTokenizer
from weaver.cli.sweep_ranks import job_process
from weaver.tasks import TranslationTask


class EmbeddingModel(torch.nn.Module):
    """Target embeddings and an output projection: the embedding's backward is what compiles to atomic adds."""

    decoder_start_token_id = 1

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.project = torch.nn.Linear(16, 64)

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.project(self.embed(decoder_input_ids))


def test_compiled_training_adds_gradients_in_order_and_the_job_restores_the_setting() -> None:
    task = TranslationTask(EmbeddingModel(), ScriptedTokenizer([]), optimizer=partial(torch.optim.SGD), compile=True)
    before = torch.are_deterministic_algorithms_enabled()
    ids = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(0))
    with job_process():
        task.configure_model()
        _, kernels = run_and_get_code(lambda: task.model(ids, None, ids).square().mean().backward())
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
    # Forward and backward compiled (Inductor's source of each); the embedding's gradient is added up by aten's
    # index_put, not by the atomic adds whose order varies between runs.
    forward, backward = kernels
    assert "aten.index_put" in backward and not any("atomic_add" in kernel for kernel in kernels)
