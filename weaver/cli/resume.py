"""`resume=auto`: re-running a command after a crash or preemption continues the run it started.

The run continued is the newest run folder beside this one (under the same task folder, e.g. `outputs/<task>/`;
this very folder when SLURM requeues a job) whose recorded overrides are this command's and that did not finish
(no `metrics.json`, and no continuation that finished); it continues from its `checkpoints/last.ckpt`, logging to
the same W&B run. The continuation writes to its own folder, leaving the earlier run's files as they are, and names
the run it continued in `run_info/resumed_from.txt`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from weaver.errors import ConfigError
from weaver.utils.distributed import is_first_process
from weaver.utils.run_lock import lock_holder

log = logging.getLogger(__name__)


def command_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a run: without `resume` and Hydra's own settings."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra.")))


RESUMED_FROM = Path("run_info") / "resumed_from.txt"


def find_unfinished_run(output_dir: Path, overrides: list[str], search_depth: int = 2) -> Path | None:
    """The newest unfinished run folder with `overrides` near `output_dir` (see the module docstring)."""
    root = output_dir.parents[search_depth - 1]
    wanted = command_overrides(overrides)
    runs = [
        listed.parent.parent
        for listed in root.glob("/".join(["*"] * search_depth) + "/.hydra/overrides.yaml")
        if command_overrides([str(o) for o in OmegaConf.load(listed)]) == wanted
    ]
    finished = finished_runs(runs)
    candidates = [run for run in runs if run not in finished and (run / "checkpoints" / "last.ckpt").is_file()]
    return max(candidates, key=lambda run: (run / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)


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


def apply_resume(cfg: DictConfig, overrides: list[str]) -> None:
    """Point `cfg.ckpt_path` (and the W&B logger) at the run this command should continue, if any."""
    if cfg.get("resume") not in (None, "auto"):
        raise ConfigError(f"resume must be 'auto' or null, got {cfg.resume!r}.")
    if cfg.get("resume") is None or cfg.get("ckpt_path"):
        return
    run = find_unfinished_run(Path(cfg.paths.output_dir), overrides)
    if run is None:
        log.info("resume=auto: no unfinished run of this command found; starting afresh.")
        return
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
