"""Early stopping says in the log why a run ended before `trainer.max_steps`."""

from __future__ import annotations

import logging

import pytest
from omegaconf import DictConfig, open_dict

from weaver.cli.train import train


def test_a_run_stopped_early_logs_why(train_config: DictConfig, caplog: pytest.LogCaptureFixture) -> None:
    with open_dict(train_config):
        train_config.trainer.max_steps = 12
        train_config.test = False
        # Only the first validation can improve on the start by so much: the second ends the run.
        train_config.callbacks.early_stopping.patience = 1
        train_config.callbacks.early_stopping.min_delta = 1000.0
    with caplog.at_level(logging.INFO):
        train(train_config)
    stops = [message for message in caplog.messages if "did not improve in the last 1 records" in message]
    assert len(stops) == 1 and "Signaling Trainer to stop" in stops[0]
    assert any("New best score" in message for message in caplog.messages)
