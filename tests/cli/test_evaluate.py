"""`python eval.py`: a checkpoint scored again, alone, gives the test metrics its training run logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import FIXTURE_SIZES, SHORT_TRAINING, tiny_run_config
from tests.helpers import best_checkpoint, run_cli, run_cli_in_process
from weaver.cli.overrides import changed_values, command_line_changes, merge_changes, named_values
from weaver.cli.train import train
from weaver.config import config_dir, register_resolvers


def test_changed_values_are_the_leaves_that_differ() -> None:
    before = {"data": {"max_tokens": 1200, "source_prefix": ""}, "generation": {"num_beams": 4}}
    after = {"data": {"max_tokens": 1200, "source_prefix": "x"}, "generation": {"num_beams": 1}, "new": {"a": 1}}
    assert changed_values(before, after) == {"data.source_prefix": "x", "generation.num_beams": 1, "new.a": 1}
    assert changed_values({"model": {"memory": None}}, {"model": {"memory": {"top_k": 8}}}) == {
        "model.memory": {"top_k": 8}
    }


def test_values_set_by_name_count_even_at_their_default() -> None:
    """`eval.py generation.num_beams=1` on a beam-search checkpoint: 1 is the default config's value, so only
    naming it tells the tool to change the checkpoint's."""
    after = {"generation": {"num_beams": 1, "max_new_tokens": 64}, "seed": 3, "data": {"max_tokens": None}}
    overrides = ["generation.num_beams=1", "+seed=3", "generation=greedy", "~data.max_tokens", "data.max_tokens=null"]
    assert named_values(after, overrides) == {"generation.num_beams": 1, "seed": 3, "data.max_tokens": None}


def test_a_new_subtree_set_by_name_changes_only_those_leaves() -> None:
    """`++model.memory.top_k=64` on a checkpoint trained with memory keeps its window; `memory=recall` (a group
    choice, its leaves not named) replaces the whole node."""
    named = {"model.memory.top_k": 64}
    assert merge_changes({"model.memory": {"top_k": 64}}, named) == named
    chosen = {"model.memory": {"window": 256, "top_k": 64}}
    assert merge_changes(chosen, named) == {**chosen, **named}


def test_a_group_choice_counts_even_where_it_is_the_default() -> None:
    """`memory=none` on a checkpoint trained with memory turns it off, `generation=beam4` on a greedy one searches
    with beams again: the defaults, but not the checkpoint's, so comparing with the defaults would miss them."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        tool = compose("eval", overrides=["ckpt_path=x.ckpt"])
        overrides = ["ckpt_path=x.ckpt", "memory=none", "generation=beam4", "split=validation", "seed=3"]
        changes = command_line_changes(overrides, tool)
        chosen = command_line_changes(["memory=recall", "model.memory.top_k=8"], tool)
    assert changes["model.memory"] is None and changes["generation.num_beams"] == 4 and changes["seed"] == 3
    assert not {"ckpt_path", "split"} & changes.keys()
    assert "generation.max_new_tokens" not in changes  # the same in every generation option: the checkpoint's stays
    # Every recall setting, each replacing the checkpoint's (the default model's `memory=saved` node is a dict).
    assert chosen["model.memory.window"] == 256 and chosen["model.memory.top_k"] == 8
    assert chosen["model.memory.prefix_token"] is None and "model.memory.saved" not in chosen


@pytest.mark.slow
def test_eval_reproduces_the_test_metrics_of_training(train_config: DictConfig, tmp_path: Path) -> None:
    trained, _ = train(train_config)
    result = run_cli(f"ckpt_path={best_checkpoint(train_config)}", cwd=tmp_path, script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "eval").glob("*/*")
    evaluated = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for name in ("test/bleu", "test/chrf", "test/loss"):
        assert evaluated[name] == pytest.approx(trained[name], rel=1e-5), name
    assert len((run_dir / "test_predictions.jsonl").read_text().splitlines()) == 24


@pytest.mark.slow
def test_eval_takes_data_and_generation_overrides(train_config: DictConfig, tmp_path: Path) -> None:
    with open_dict(train_config):  # as debug=fast runs do: a part of each split
        train_config.trainer.limit_val_batches = 1
        train_config.trainer.limit_test_batches = 1
    train(train_config)
    args = [
        f"ckpt_path={best_checkpoint(train_config)}",
        "split=validation",
        "generation=greedy",
        "data.eval_batch_size=5",  # 5 batches: the run's limit of 1 would score 5 examples
    ]
    result = run_cli_in_process(*args, cwd=tmp_path, script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "eval").glob("*/*")
    assert {"val/bleu", "val/loss"} <= set(json.loads((run_dir / "metrics.json").read_text())["metrics"])
    predictions = (run_dir / "validation_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == FIXTURE_SIZES["validation"]  # every example, not the run's own subset
    config = OmegaConf.load(run_dir / "run_config.yaml")
    assert config.generation.num_beams == 1 and config.data.eval_batch_size == 5
    assert config.model.d_model == 64  # the rest is the checkpoint's own
    assert config.ckpt_path is None and "split" not in config  # the tool's own keys are not the run's


@pytest.mark.slow
def test_a_split_carved_from_a_changed_train_file_is_refused(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Carved again from a train file changed since training, the test split would hold other rows, some of which
    the run trained on: eval.py says so instead of scoring them. A test file of its own is scored, even with the
    run's train file gone."""
    rows = (tiny_data_dir / "train.jsonl").read_text().splitlines(keepends=True)
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(rows))
    overrides = [f"data.train_file={train_file}", *SHORT_TRAINING, "trainer.max_steps=2", "test=false"]
    cfg = tiny_run_config(overrides, tmp_path / "trained")
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["Seq2SeqDataModule"]
    assert set(stored["carved_splits"]) == {"validation", "test"}
    assert run_cli_in_process(f"ckpt_path={checkpoint}", cwd=tmp_path, script="eval.py").returncode == 0

    train_file.write_text("".join(rows[20:]))
    result = run_cli_in_process(f"ckpt_path={checkpoint}", cwd=tmp_path, script="eval.py")
    assert result.returncode == 1
    assert "Error: The test split, carved from the train rows again, holds other rows than the" in result.stderr
    own_test = f"data.test_file={tiny_data_dir / 'test.jsonl'}"
    train_file.unlink()  # a file of its own is all eval.py reads, the run's train data gone or not
    result = run_cli_in_process(f"ckpt_path={checkpoint}", own_test, cwd=tmp_path, script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]
