"""Two nodes simulated on one machine: two processes, each given what a cluster's launcher tells it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import SHORT_TRAINING, TINY_MODEL, TINY_RUN
from tests.helpers import start, weights_digest
from weaver.cli.evaluate import evaluate

# What a launcher tells a process about its place in a run: set here, never inherited from the shell running the tests.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def srun_task_env(node: int, port: int) -> dict[str, str]:
    """What srun sets for the task on `node` of `sbatch --nodes=2 --ntasks-per-node=1`, whose first node is this
    machine; the job's MASTER_PORT, as a batch script would export it, is a free one."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": str(node),
        "SLURM_NODEID": str(node),
        "SLURM_LOCALID": "0",
        "MASTER_PORT": str(port),
    }


def by_hand_env(node: int, port: int) -> dict[str, str]:
    """A cluster without a scheduler: the same command on every node, told the first node's address and its own
    rank (Lightning's launcher then starts that node's processes)."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": str(node)}


# How each launch sets the size of the run: the SLURM launcher's config from its job's nodes, or by hand.
LAUNCHES: dict[str, tuple[Callable[[int, int], dict[str, str]], list[str]]] = {
    "srun": (srun_task_env, ["launcher=slurm", "hydra.launcher.nodes=2"]),
    "by-hand": (by_hand_env, ["trainer.num_nodes=2", "trainer.devices=1"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("launch", LAUNCHES)
def test_a_two_node_run_trains_one_model_into_one_run_dir(
    launch: str, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics cannot equal one process's on the same global batches: each rank averages the loss over its own
    batch's tokens and DDP averages the two gradients, while one process averages over all the tokens at once (and
    draws other dropout masks). What is exact: both ranks end with bit-identical weights, those rank 0 saved, and the
    test metrics, computed over both ranks, are those of the tested checkpoint evaluated by one process alone."""
    for name in [*LAUNCH_VARIABLES, *(name for name in os.environ if name.startswith("SLURM_"))]:
        monkeypatch.delenv(name, raising=False)
    node_env, sizes = LAUNCHES[launch]
    # One folder for both nodes: submitit gives every task its job's; by hand, hydra.run.dir on a shared disk.
    run_dir = tmp_path / "outputs" / "translation" / "job" / "0"
    args = [f"data.data_dir={tiny_data_dir}", *TINY_MODEL, *TINY_RUN, *SHORT_TRAINING, *sizes]
    args += [f"hydra.run.dir={run_dir}", "+callbacks.weights._target_=tests.helpers.PrintWeights"]
    port, outputs, nodes = free_port(), [tmp_path / f"node{node}.log" for node in (0, 1)], []
    try:
        for node, output in enumerate(outputs):
            with open(output, "w") as file:  # one core per node
                nodes.append(start(args, tmp_path, env={**node_env(node, port), "OMP_NUM_THREADS": "1"}, output=file))
        for process in nodes:
            assert process.wait(timeout=110) == 0, [output.read_text()[-3000:] for output in outputs]
    finally:
        for process in nodes:
            process.kill()
    logs = [output.read_text() for output in outputs]
    assert (run_dir / "run.lock").read_text() == f"{nodes[0].pid}\n"  # rank 0 owned the run dir
    saved = weights_digest(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    held = sorted(line for log in logs for line in log.splitlines() if line.startswith("rank "))
    assert held == [f"rank 0 weights {saved}", f"rank 1 weights {saved}"]

    (tested,) = (run_dir / "checkpoints").glob("step*.ckpt")
    trained = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    (eval_dir := tmp_path / "eval").mkdir()
    paths = {"output_dir": str(eval_dir), "cache_dir": str(tmp_path)}
    alone = OmegaConf.create({"ckpt_path": str(tested), "split": "test", "paths": paths})
    evaluated = evaluate(alone, {"trainer.num_nodes": 1})
    for name in ("test/bleu", "test/chrf", "test/loss"):
        assert evaluated[name] == pytest.approx(trained[name], rel=1e-6), name
