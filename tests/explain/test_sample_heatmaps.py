"""Validation samples log their relevance heatmaps as images to TensorBoard and W&B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from weaver.cli.train import train
from weaver.tasks.samples import log_heatmaps


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_validation_heatmaps_reach_tensorboard_unless_switched_off(train_config: DictConfig, enabled: bool) -> None:
    folder = Path(train_config.paths.output_dir) / "tensorboard"
    with open_dict(train_config):
        train_config.task.sample_heatmaps = enabled
        train_config.logger.tensorboard = {
            "_target_": "lightning.pytorch.loggers.TensorBoardLogger",
            "save_dir": str(folder.parent),
            "name": folder.name,
            "version": "",
        }
    train(train_config)
    events = EventAccumulator(str(folder)).Reload()
    tags = {tag for tag in events.Tags()["images"] if tag.startswith("val/relevance/")}
    if enabled:
        assert tags == {f"val/relevance/{index}" for index in range(5)}  # task.num_samples
        assert len(events.Images("val/relevance/0")) == 2  # one per validation
    else:
        assert not tags


def test_heatmaps_go_to_wandb_one_key_each() -> None:
    logger = object.__new__(WandbLogger)
    calls: list[dict] = []
    logger.log_image = lambda **kwargs: calls.append(kwargs)  # type: ignore[method-assign]
    images = [np.zeros((20, 30, 3), dtype=np.uint8), np.zeros((25, 40, 3), dtype=np.uint8)]
    log_heatmaps(images, 7, [logger])
    assert calls == [{"key": f"val/relevance/{i}", "images": [image], "step": 7} for i, image in enumerate(images)]
