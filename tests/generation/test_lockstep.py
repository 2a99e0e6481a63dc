"""A model sharded by FSDP over two CPU processes (gloo) decodes and encodes in windows in lockstep: the rank whose
sources finish first, or that reads fewer windows, keeps stepping until the other is done, instead of leaving it
waiting in a weight gather (a hang until the process group's timeout)."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from weaver.generation import GenerationConfig
from weaver.models.memory import MemoryConfig
from weaver.models.weaver import DecoderLayer, EncoderLayer, WeaverConfig, WeaverModel

EARLY_EOS_SOURCE_TOKEN = 4  # sources starting with it end (EOS) after 3 tokens
SOURCES = {  # rank: its source; rank 1's ends early and, with memory, needs fewer windows
    0: [5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
    1: [EARLY_EOS_SOURCE_TOKEN, 7, 8, 9, 10, 11],
}
SEARCHES = {"greedy": GenerationConfig(max_new_tokens=12), "beam": GenerationConfig(max_new_tokens=12, num_beams=3)}


def model(memory: bool) -> WeaverModel:
    torch.manual_seed(0)
    settings = MemoryConfig(window=4, stride=2, top_k=8, window_batch_size=1) if memory else None
    config = WeaverConfig(
        vocab_size=40, d_model=32, num_heads=4, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=64, dropout=0.0
    )
    config.memory = settings
    weaver = WeaverModel(config).eval()
    decode = weaver.decode

    def decode_ending_early(ids, states, mask, cache=None, source_ids=None):  # as a trained model's outputs end
        logits = decode(ids, states, mask, cache, source_ids)
        if cache is not None and cache.length >= 3:
            logits[:, -1, config.eos_token_id] += 1000.0 * (source_ids[:, 0] == EARLY_EOS_SOURCE_TOKEN)
        return logits

    weaver.decode = decode_ending_early
    return weaver


class Root(torch.nn.Module):
    """Lightning runs `validation_step` inside the forward of the root FSDP unit: so does this."""

    def __init__(self, weaver: WeaverModel) -> None:
        super().__init__()
        self.weaver = weaver

    def forward(self, ids: torch.Tensor, search: str, train: bool) -> torch.Tensor:
        if train:  # a training step's loss on windows encoded with gradients
            return self.weaver.encode(ids, torch.ones_like(ids)).square().mean()
        return self.weaver.generate(ids, torch.ones_like(ids), SEARCHES[search])


def worker(rank: int, port: int, memory: bool, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30)
    )
    torch.set_num_threads(1)
    wrapped = FullyShardedDataParallel(
        Root(model(memory)), auto_wrap_policy=ModuleWrapPolicy({EncoderLayer, DecoderLayer}), device_id="cpu"
    )
    ids = torch.tensor([SOURCES[rank]])
    outputs = {search: wrapped(ids, search, train=False)[0].tolist() for search in SEARCHES}
    if memory:  # backward, too, runs the encoder as many times on both ranks
        wrapped(ids, "greedy", train=True).backward()
    dist.barrier()
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(outputs))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("memory", [False, True], ids=["full_attention", "memory"])
def test_sharded_ranks_finishing_at_different_steps_decode_as_one_process_does(memory: bool, tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), memory, str(tmp_path)), nprocs=2, join=True)
    alone = model(memory)
    for rank, source in SOURCES.items():
        outputs = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for search, config in SEARCHES.items():
            expected = alone.generate(torch.tensor([source]), generation_config=config)[0].tolist()
            kept = outputs[search][: len(expected)]  # the rank done first pads its output while the other steps on
            assert kept == expected and set(outputs[search][len(expected) :]) <= {alone.config.pad_token_id}
    # Rank 1's output ended early, so it ran idle steps, not fewer steps, and nothing hung.
    assert len(json.loads((tmp_path / "rank1.json").read_text())["greedy"]) > 4
