"""`python eval.py ckpt_path=... [split=validation] [overrides]` / `weaver-eval`: score a checkpoint.

The checkpoint's own run config rebuilds data, model and task, with the command line's overrides applied to it
(see `weaver.cli.overrides`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from weaver.callbacks import ProgressBar
from weaver.checkpoints import restore_run
from weaver.cli.train import scalar_metrics, write_metrics
from weaver.data import GivenTokenizer
from weaver.instantiate import build, build_trainer

log = logging.getLogger(__name__)
# The config a tool restoring a checkpoint ran with; Hydra's .hydra/config.yaml is the default one composed before
# the checkpoint's was read.
RUN_CONFIG_FILE = "run_config.yaml"


def write_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """The checkpoint's config with this command's overrides, as the run dir's record of what ran."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / RUN_CONFIG_FILE)


def evaluate(cfg: DictConfig, changes: dict[str, Any]) -> dict[str, float]:
    """Score `cfg.ckpt_path` on `cfg.split` (checked by `check_evaluate`); metrics and predictions go to this run's
    own output dir."""
    output_dir = Path(cfg.paths.output_dir)
    run = restore_run(
        cfg.ckpt_path,
        {
            # The whole split, whatever the run itself validated and tested (debug=fast: 2 batches of each), unless
            # this command limits it again (++trainer.limit_test_batches=0.1).
            "trainer.limit_val_batches": 1.0,
            "trainer.limit_test_batches": 1.0,
            **changes,
            "paths.output_dir": str(output_dir),
            "paths.cache_dir": cfg.paths.cache_dir,
            "trainer.default_root_dir": str(output_dir),
            "task.predictions_file": str(output_dir / f"{cfg.split}_predictions.jsonl"),
            "task.samples_dir": None,
            "task.max_generate_examples": None,  # every example, as the test split always is
        },
    )
    log.info("Evaluating %s on the %s split", cfg.ckpt_path, cfg.split)
    write_run_config(run.cfg, output_dir)
    tokenizer = GivenTokenizer(run.tokenizer)
    datamodule = build(run.cfg.data, "data", tokenizer=tokenizer, cache_dir=cfg.paths.cache_dir, splits=[cfg.split])
    datamodule.load_state_dict(run.data_state)  # a split carved from train is checked against the run's
    trainer: L.Trainer = build_trainer(run.cfg.trainer, callbacks=[ProgressBar()], logger=False)
    if cfg.split == "test":
        trainer.test(run.task, datamodule=datamodule)
    else:
        trainer.validate(run.task, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_metrics(output_dir / "metrics.json", metrics, run.task.metric_signatures)
    return metrics
