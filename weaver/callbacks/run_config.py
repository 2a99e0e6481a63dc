"""Store the composed run config and the tokenizer in every checkpoint, so a checkpoint alone rebuilds the run."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "weaver_config"
TOKENIZER_KEY = "weaver_tokenizer"


class RunConfigInCheckpoint(Callback):
    def __init__(self, config: DictConfig | dict[str, Any] | None = None) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint[CONFIG_KEY] = OmegaConf.to_container(OmegaConf.create(self.config), resolve=True)
        tokenizer = getattr(pl_module, "tokenizer", None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            checkpoint[TOKENIZER_KEY] = backend.to_str()
