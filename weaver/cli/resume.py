"""`resume=auto`: re-running a command after a crash or preemption continues the run it started.

The run continued is the newest run folder under the same task folder (`outputs/<task>/` for a single run,
`multirun/<task>/` for a sweep's job, whatever the date; this very folder when SLURM requeues a job) whose
recorded overrides are this command's and that did not finish (no `metrics.json`, and no continuation that
finished); it continues from its `checkpoints/last.ckpt`, logging to the same W&B run. The continuation writes to
its own folder, leaving the earlier run's files as they are, and names the run it continued in
`run_info/resumed_from.txt`. A sweep run again with `resume=auto` finishes what it left: a job whose command
finished since its last interrupted run is not trained again, and stands for that finished run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from weaver.errors import FINISHED_IN, ConfigError, TrainingDiverged
from weaver.utils.distributed import is_first_process
from weaver.utils.run_lock import lock_holder

log = logging.getLogger(__name__)


def command_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a run: without `resume` and Hydra's own settings."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra.")))


RESUMED_FROM = Path("run_info") / "resumed_from.txt"
RUN_DEPTH = 2  # outputs/<task>/<date>/<time>
SWEEP_JOB_DEPTH = 3  # multirun/<task>/<date>/<time>/<job>


def run_depth(output_dir: Path) -> int:
    """How far below its task folder a run sits. A sweep's job is one level deeper than a single run; Hydra
    records the job's mode in `.hydra/hydra.yaml`, which the other ranks of a multi-process job (run as single
    runs in the job's folder) read too."""
    hydra_file = output_dir / ".hydra" / "hydra.yaml"
    multirun = hydra_file.is_file() and OmegaConf.load(hydra_file).hydra.get("mode") == "MULTIRUN"
    return SWEEP_JOB_DEPTH if multirun else RUN_DEPTH


def command_runs(output_dir: Path, overrides: list[str], search_depth: int = RUN_DEPTH) -> list[Path]:
    """The run folders with `overrides` under the task folder of `output_dir`, `search_depth` levels above it."""
    root = output_dir.parents[search_depth - 1]
    wanted = command_overrides(overrides)
    return [
        listed.parent.parent
        for listed in root.glob("/".join(["*"] * search_depth) + "/.hydra/overrides.yaml")
        if command_overrides([str(o) for o in OmegaConf.load(listed)]) == wanted
    ]


def find_unfinished_run(output_dir: Path, overrides: list[str], search_depth: int = RUN_DEPTH) -> Path | None:
    """The newest unfinished run folder with `overrides` near `output_dir` (see the module docstring)."""
    runs = command_runs(output_dir, overrides, search_depth)
    finished = finished_runs(runs)
    candidates = [run for run in runs if run not in finished and (run / "checkpoints" / "last.ckpt").is_file()]
    return max(candidates, key=last_written, default=None)


def find_finished_run(output_dir: Path, overrides: list[str], search_depth: int = SWEEP_JOB_DEPTH) -> Path | None:
    """The run folder with `overrides` near `output_dir` that wrote `metrics.json` last."""
    runs = command_runs(output_dir, overrides, search_depth)
    return max((run for run in runs if (run / "metrics.json").is_file()), key=last_written, default=None)


def last_written(run: Path) -> float:
    """When a run last recorded its progress: its `metrics.json` once finished, else its `last.ckpt`."""
    finished = run / "metrics.json"
    return (finished if finished.is_file() else run / "checkpoints" / "last.ckpt").stat().st_mtime


def finished_runs(runs: list[Path]) -> set[Path]:
    """The runs among `runs` that wrote `metrics.json`, and those a finished run continued, however many
    continuations ago."""
    finished = {run for run in runs if (run / "metrics.json").is_file()}
    continued = {run: Path((run / RESUMED_FROM).read_text().strip()) for run in runs if (run / RESUMED_FROM).is_file()}
    while newly := {continued[run] for run in finished if run in continued} - finished:
        finished |= newly
    return finished


def wandb_run_id(run: Path) -> str | None:
    """The id of the W&B run a run folder logged to (`wandb/latest-run/run-<id>.wandb`)."""
    found = sorted((run / "wandb" / "latest-run").glob("run-*.wandb"))
    return found[0].stem.removeprefix("run-") if found else None


def apply_resume(cfg: DictConfig, overrides: list[str]) -> Path | None:
    """Point `cfg.ckpt_path` (and the W&B logger) at the run this command should continue, if any. A sweep's job
    whose command finished since returns that finished run instead: the job has nothing left to train, and
    reports that run's result (`recorded_objective`) to the sweeper."""
    if cfg.get("resume") not in (None, "auto"):
        raise ConfigError(f"resume must be 'auto' or null, got {cfg.resume!r}.")
    if cfg.get("resume") is None or cfg.get("ckpt_path"):
        return None
    output_dir = Path(cfg.paths.output_dir)
    depth = run_depth(output_dir)
    run = find_unfinished_run(output_dir, overrides, depth)
    finished = find_finished_run(output_dir, overrides) if depth == SWEEP_JOB_DEPTH else None
    if finished is not None and (run is None or last_written(finished) > last_written(run)):
        log.warning("resume=auto: this job finished in %s (its metrics.json); not training it again.", finished)
        if is_first_process():  # where the sweep's report finds the job's result
            (output_dir / FINISHED_IN).parent.mkdir(parents=True, exist_ok=True)
            (output_dir / FINISHED_IN).write_text(f"{finished}\n")
        return finished
    if run is None:
        log.info("resume=auto: no unfinished run of this command found; starting afresh.")
        return None
    continue_run(cfg, run)
    return None


def continue_run(cfg: DictConfig, run: Path) -> None:
    """Point `cfg` at `run`'s `last.ckpt` and W&B run, unless another process is still training it."""
    holder = lock_holder(run)
    # The other ranks of a multi-process run (a requeued SLURM job) continue the run their rank 0 holds.
    if holder is not None and holder != os.getpid() and is_first_process():
        raise ConfigError(
            f"resume=auto: {run}, the latest unfinished run of this command, is still running (PID {holder}); "
            "stop it first, or drop resume=auto to start afresh."
        )
    output_dir = Path(cfg.paths.output_dir)
    if run != output_dir and is_first_process():
        (output_dir / RESUMED_FROM).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / RESUMED_FROM).write_text(f"{run}\n")
    with open_dict(cfg):
        cfg.ckpt_path = str(run / "checkpoints" / "last.ckpt")
        run_id = wandb_run_id(run)
        if run_id and OmegaConf.select(cfg, "logger.wandb") is not None:
            cfg.logger.wandb.id = run_id
            cfg.logger.wandb.resume = "allow"
    log.warning("resume=auto: continuing %s from %s", run, cfg.ckpt_path)


def recorded_objective(run: Path, metric: str) -> float | None:
    """What training returned to the sweeper when `run` finished (`weaver.cli.train.objective`): the best value of
    `metric` its checkpoint callback kept, as `last.ckpt` holds it (saved after that callback at every validation),
    else the value in its `metrics.json`; a diverged run is an error again."""
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True) if last.is_file() else {}
    for state in checkpoint.get("callbacks", {}).values():
        if state.get("monitor") == metric and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    value = json.loads((run / "metrics.json").read_text())["metrics"].get(metric)
    if value is not None and not math.isfinite(value):
        raise TrainingDiverged(f"{metric} is {value}: the run diverged and has no result to report.")
    return value
