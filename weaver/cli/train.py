"""`python train.py` / `weaver-train`: compose the config, build data, model and task, fit, then test."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from weaver.callbacks import RunConfigInCheckpoint
from weaver.checkpoint_io import remove_partial_checkpoints
from weaver.checkpoints import check_continuation
from weaver.cli.reporting import log_hyperparameters, print_config
from weaver.cli.resume import apply_resume, recorded_objective
from weaver.cli.sweep_ranks import job_process
from weaver.config import optuna_direction, register_resolvers
from weaver.data.tokenizer import save_tokenizer
from weaver.errors import ConfigError, TrainingDiverged, checkpoint_file
from weaver.instantiate import build, build_model, build_named, build_task, build_tokenizer, build_trainer
from weaver.tasks import Seq2SeqTask
from weaver.tasks.seq2seq import check_optimizer, check_scheduler
from weaver.utils.distributed import exit_with_launcher, is_first_process
from weaver.utils.hardware import share_cpu_cores
from weaver.utils.provenance import record_provenance
from weaver.utils.run_lock import run_dir_lock

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and/or test as `cfg` says; returns the final metrics and the objects built (for tests and sweeps)."""
    register_resolvers()
    check_required(cfg)
    if cfg.get("ckpt_path"):  # a missing or truncated file is named now, not by Lightning once everything is built
        checkpoint_file(cfg.ckpt_path)
    output_dir = Path(cfg.paths.output_dir)
    if not is_first_process():  # the other processes of a multi-device run keep quiet unless something is wrong
        exit_with_launcher()
        logging.getLogger("weaver").setLevel(logging.WARNING)
        return train_in(cfg, output_dir)
    with run_dir_lock(output_dir), job_process():
        remove_partial_checkpoints(output_dir / "checkpoints")
        return train_in(cfg, output_dir)


def absolute_model_paths(cfg: DictConfig) -> None:
    """A model read from a local folder or file named by a relative path (`model.init_from=exp_base`) is recorded by
    its absolute path: the config saved with the run and its checkpoints then finds it from any directory, as eval.py,
    predict.py and export.py must."""
    model = cfg.get("model")
    for key in ("init_from", "name_or_path"):
        if model is None or key not in model or OmegaConf.is_missing(model, key):
            continue
        value = model.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).expanduser().exists():
            model[key] = str(Path(value).expanduser().resolve())


def train_in(cfg: DictConfig, output_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """`train`, once this process may write to `output_dir`."""
    absolute_model_paths(cfg)
    if cfg.get("print_config"):
        print_config(cfg)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}.")
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("train"):
        check_monitor_mode(cfg)
        check_optimizer(build(cfg.optimizer, "optimizer"))
        check_scheduler(cfg.get("scheduler"))
    if is_first_process():
        record_provenance(output_dir / "run_info")
    # The trainer first: a device count this machine lacks is refused before the data is prepared.
    callbacks = build_named(cfg.get("callbacks"), "callbacks")
    for callback in callbacks:
        if isinstance(callback, RunConfigInCheckpoint):
            callback.config = cfg
    loggers = build_named(cfg.get("logger"), "logger")
    if not loggers:  # `logger=none`: Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    trainer: L.Trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    share_cpu_cores(type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(), trainer.num_devices)
    datamodule = build(cfg.data, "data", tokenizer=build_tokenizer(cfg), cache_dir=cfg.paths.cache_dir)
    tokenizer = datamodule.tokenizer
    rank_zero_only(save_tokenizer)(tokenizer, output_dir / "tokenizer")
    model = build_model(cfg, tokenizer)
    task = build_task(cfg, model, tokenizer)
    if cfg.get("ckpt_path") and (cfg.get("train") or cfg.get("test")):
        check_continuation(cfg.ckpt_path, cfg, task)
    if cfg.get("train"):
        check_monitor_metric(cfg, task)
    log_hyperparameters(cfg, model, trainer)

    metrics: dict[str, float] = {}
    if cfg.get("train"):
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics.update(task.restored_metrics)  # what a continuation that validated no more last logged before
        metrics.update(scalar_metrics(trainer.callback_metrics))
    if cfg.get("test"):
        checkpoint = best_checkpoint(trainer) if cfg.get("train") else cfg.get("ckpt_path")
        if checkpoint:
            log.info("Testing checkpoint %s", checkpoint)
        trainer.test(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    if trainer.is_global_zero:
        write_metrics(output_dir / "metrics.json", metrics, task.metric_signatures)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "task": task, "trainer": trainer}
    return metrics, objects


def check_required(cfg: DictConfig) -> None:
    """A value the chosen configs leave to the command (`???`, e.g. `model=weaver_pretrained`'s `model.init_from`),
    named before anything is built: where it is interpolated (`tokenizer.name_or_path`), it would fail as a missing
    argument of something else."""
    missing = sorted(unset_keys(OmegaConf.to_container(cfg, resolve=False)))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required by the chosen configs: add {missing[0]}=... to the command.")


def unset_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in unset_keys(value, f"{prefix}{name}.")]
    return [prefix.rstrip(".")] if node == "???" else []


def check_monitor_mode(cfg: DictConfig) -> None:
    """Before the callbacks are built: they would name their own key, not the `monitor.mode` the user set."""
    optuna_direction(OmegaConf.select(cfg, "monitor.mode", default="max"))  # raises on anything but max / min


def check_monitor_metric(cfg: DictConfig, task: Seq2SeqTask) -> None:
    """A monitored metric the task never logs would stop the run only at its first validation, inside Lightning."""
    metric = OmegaConf.select(cfg, "monitor.metric", default=None)
    known = [*task.logged_metrics("val"), "train/loss"]
    if metric and metric not in known:
        unscored = metric in [f"val/{name}" for name in task.metric_names]  # max_generate_examples=0
        why = " (task.max_generate_examples=0: validation generates nothing to score)" if unscored else ""
        raise ConfigError(
            f"monitor.metric='{metric}' is not a metric this task logs{why}; use one of: {', '.join(known)}."
        )
    # The tasks' presets monitor a score (mode max): switching to a loss alone would keep the best as the worst.
    if metric and metric.endswith(("/loss", "/ppl")) and OmegaConf.select(cfg, "monitor.mode") == "max":
        raise ConfigError(f"monitor.metric='{metric}' is lower for a better model: add monitor.mode=min.")


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The monitored best when there is one (else the weights in memory are tested)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}


def write_metrics(path: Path, metrics: dict[str, float], signatures: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "signatures": signatures}, indent=2) + "\n")
    log.info("Metrics: %s", json.dumps(metrics, sort_keys=True))


def objective(cfg: DictConfig, metrics: dict[str, float], trainer: L.Trainer) -> float | None:
    """What a sweep optimises: the best value of `monitor.metric` over the run's validations (the one its best
    checkpoint holds), else its last value; a diverged run is an error, which a sweep records as a failed trial."""
    metric = OmegaConf.select(cfg, "monitor.metric", default="")
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) == metric and callback.best_model_score is not None:
            return float(callback.best_model_score)  # never NaN: see FiniteModelCheckpoint
    value = metrics.get(metric)
    if value is not None and not math.isfinite(value):
        raise TrainingDiverged(f"{metric} is {value}: the run diverged and has no result to report.")
    if value is None and cfg.get("train", True):
        unmeasured = (
            f"monitor.metric={metric} was never measured: no validation ran in this run's "
            f"trainer.max_steps={cfg.trainer.get('max_steps')} (trainer.val_check_interval="
            f"{cfg.trainer.get('val_check_interval')}); lower the interval or train longer"
        )
        if searching():
            raise ConfigError(f"{unmeasured}: an Optuna trial needs the value.")
        log.warning("%s.", unmeasured)
    return value


def searching() -> bool:
    """Whether this job is a trial of an Optuna search (the value it returns is the trial's result)."""
    return HydraConfig.initialized() and "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()


def run(cfg: DictConfig) -> float | None:
    """`python train.py`: continue an unfinished run if `resume=auto` finds one, train, and return the objective of
    Hydra sweepers."""
    finished = apply_resume(cfg, list(HydraConfig.get().overrides.task))
    if finished is not None:  # a sweep's job whose command finished: its result, not another training
        return recorded_objective(finished, OmegaConf.select(cfg, "monitor.metric", default=""))
    try:
        metrics, objects = train(cfg)
        return objective(cfg, metrics, objects["trainer"])
    except SIGTERMException:  # the preemption callback saved last.ckpt; the entry point exits with 143
        print("last.ckpt is saved: run the same command with resume=auto to continue.", file=sys.stderr)
        raise
    except Exception:
        if searching():
            explain_a_search_without_results()
        raise


def explain_a_search_without_results() -> None:
    """Where the failing trial is the command's last and no trial of the study has a result, say so: Hydra's Optuna
    sweeper then asks the study for its best trial and stops on Optuna's bare "Record does not exist."."""
    import optuna

    hydra_config = HydraConfig.get()
    sweeper = hydra_config.sweeper
    if sweeper.get("storage") is None or hydra_config.job.num < sweeper.n_trials - sweeper.get("n_jobs", 1):
        return
    try:
        trials = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage).trials
    except Exception:  # an unreadable study: the trial's own error, raised next, is what matters
        return
    states = [trial.state for trial in trials]
    if optuna.trial.TrialState.COMPLETE not in states and states.count(optuna.trial.TrialState.RUNNING) <= 1:
        log.error(
            "No trial of study '%s' has a result (%d failed; each failed job's reason is in its "
            'run_info/error.txt): the Optuna sweeper, which reports the best trial, will stop with "Record does '
            'not exist.".',
            sweeper.study_name,
            states.count(optuna.trial.TrialState.FAIL) + 1,
        )
