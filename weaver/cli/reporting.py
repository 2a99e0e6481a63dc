"""What a run shows and records at start: the config tree, and hyperparameters for every logger."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import rich
import rich.syntax
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

log = logging.getLogger(__name__)

# Shown first; the rest follow in config order.
PRINT_ORDER = ("task", "data", "tokenizer", "model", "generation", "trainer", "callbacks", "logger", "paths")


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config as a Rich tree, one branch per group."""
    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {
        "model/params_total": sum(p.numel() for p in model.parameters()),
        "model/params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


@rank_zero_only
def log_hyperparameters(cfg: DictConfig, model: nn.Module, trainer: L.Trainer) -> None:
    """The resolved config and parameter counts go to every logger, so runs can be compared by any of them."""
    counts = count_parameters(model)
    log.info(
        "Model %s: %s parameters (%s trainable)",
        type(model).__name__,
        f"{counts['model/params_total']:,}",
        f"{counts['model/params_trainable']:,}",
    )
    if not trainer.loggers:
        return
    hparams: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hparams.pop("hydra", None)
    hparams.update(counts)
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
