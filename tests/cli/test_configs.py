"""Every option of every config group composes, and `task` brings its own defaults."""

from __future__ import annotations

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from tests.conftest import compose_config
from weaver.config import config_dir

# Groups whose options are chosen on the command line; `hydra` and `paths` have one option each.
GROUPS = [path.name for path in sorted(config_dir().iterdir()) if path.is_dir() and path.name not in {"hydra", "paths"}]


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def targets(cfg) -> list[str]:
    """Every `_target_` in the composed config."""
    found = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "_target_" in node:
                found.append(node["_target_"])
            for value in node.values():
                walk(value)

    walk(OmegaConf.to_container(cfg, resolve=False))
    return found


@pytest.mark.parametrize(("group", "option"), [(group, option) for group in GROUPS for option in group_options(group)])
def test_every_option_composes_and_its_targets_import(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    for target in targets(cfg):
        assert get_object(target) is not None


def test_one_monitored_metric_feeds_checkpoints_and_early_stopping() -> None:
    cfg = compose_config(["monitor.metric=val/chrf"])
    assert cfg.callbacks.model_checkpoint.monitor == cfg.callbacks.early_stopping.monitor == "val/chrf"


def test_task_defaults_stay_overridable() -> None:
    cfg = compose_config(["model=weaver_base", "generation=greedy", "data.max_source_length=64"])
    assert cfg.model.d_model == 512 and cfg.generation.num_beams == 1 and cfg.data.max_source_length == 64


def test_a_device_count_on_the_command_line_wins_over_the_hardware_group() -> None:
    assert compose_config(["hardware=ddp", "trainer.devices=2"]).trainer.devices == 2


def test_debug_overlays_shrink_the_run() -> None:
    cfg = compose_config(["debug=fast"])
    assert cfg.trainer.max_steps <= 10 and list(cfg.logger) == ["csv"]


def test_own_files_train_by_overrides_alone(tmp_path) -> None:
    from tests.conftest import write_jsonl
    from weaver.instantiate import build

    rows = [{"en": f"sentence {i}", "fr": f"phrase {i}"} for i in range(40)]
    train, dev = write_jsonl(tmp_path / "train.jsonl", rows[:30]), write_jsonl(tmp_path / "dev.jsonl", rows[30:])
    cfg = compose_config(
        [f"data.train_file={train}", f"data.validation_file={dev}", "data.source_field=en", "data.target_field=fr"]
    )
    datamodule = build(cfg.data, "data", tokenizer=build(cfg.tokenizer, "tokenizer"), cache_dir=str(tmp_path))
    pairs = datamodule.pairs()
    assert pairs["validation"]["target"] == [f"phrase {i}" for i in range(30, 40)]
    assert len(pairs["train"]) + len(pairs["test"]) == 30  # test carved from train
    assert all(target.startswith("phrase") for target in pairs["test"]["target"])


def test_a_key_its_target_does_not_take_is_named_with_the_options_it_has() -> None:
    from weaver.errors import ConfigError
    from weaver.instantiate import build

    cfg = compose_config(["+data.max_lenght=64"])
    with pytest.raises(ConfigError, match=r"^data.max_lenght: not an option of weaver.data.datamodule.Seq2SeqDataMod"):
        build(cfg.data, "data", tokenizer=None)


def test_only_the_builders_of_models_from_saved_weights_take_a_checkpoints_model_config() -> None:
    from weaver.instantiate import takes_saved_config

    assert takes_saved_config(compose_config(["model=hf_seq2seq"]).model)
    assert takes_saved_config(OmegaConf.create({"_target_": "weaver.models.load_weaver"}))
    assert not takes_saved_config(compose_config(["model=weaver_small"]).model)  # its config is the run's
    assert not takes_saved_config(OmegaConf.create({"_target_": "weaver.models.nope"}))  # left for build to name
