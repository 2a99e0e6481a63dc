"""Store the composed run config, the tokenizer and the model's config files in every checkpoint, so a checkpoint
alone rebuilds the run (without the pretrained folder, Hub model or `model.init_from` it started from)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

from weaver.data.tokenizer import save_tokenizer

CONFIG_KEY = "weaver_config"
TOKENIZER_KEY = "weaver_tokenizer"
BACKBONE_CONFIG_KEY = "weaver_backbone_config"


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """The files `save_pretrained` writes, as {name: bytes}: loadable with `weights_only=True`."""
    with tempfile.TemporaryDirectory() as folder:
        save_tokenizer(tokenizer, folder)
        return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


class RunConfigInCheckpoint(Callback):
    def __init__(self, config: DictConfig | dict[str, Any] | None = None) -> None:
        self.config = config
        self._tokenizer_files: dict[str, bytes] | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint[CONFIG_KEY] = OmegaConf.to_container(OmegaConf.create(self.config), resolve=True)
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is not None:
            if self._tokenizer_files is None:  # the tokenizer does not change during a run
                self._tokenizer_files = tokenizer_files(tokenizer)
            checkpoint[TOKENIZER_KEY] = self._tokenizer_files
        config_files = getattr(getattr(pl_module, "model", None), "config_files", None)
        if config_files is not None:
            checkpoint[BACKBONE_CONFIG_KEY] = config_files()
