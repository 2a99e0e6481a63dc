"""Command-line overrides for tools that start from a checkpoint's stored config (eval.py, predict.py).

The overrides are applied to the default training config and whatever they change there is changed in the stored
config too, so `data=wmt16_de_en`, `data.test_file=...` or `generation=greedy` mean what they mean for train.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from weaver.cli.entry import entry_point
from weaver.errors import checkpoint_file, require_checkpoint

_ABSENT = object()


def changed_values(before: Any, after: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: new value} for every leaf that differs from `before` to `after`; a subtree that replaces a
    value that is not one (`memory=recall` where the default has `model.memory: null`) is one change. Keys absent
    before count leaf by leaf, so `++data.pair_builder.seed=1` changes that value of the run's pair builder and
    keeps the rest of it."""
    if before is _ABSENT and isinstance(after, dict):
        before = {}
    if isinstance(before, dict) and isinstance(after, dict):
        changes: dict[str, Any] = {}
        for key, value in after.items():
            changes.update(changed_values(before.get(key, _ABSENT), value, f"{prefix}{key}."))
        return changes
    return {} if before == after else {prefix.rstrip("."): after}


def named_values(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """{dotted key: its value in `config`} for each value an override sets by name (`generation.num_beams=1`,
    `seed=3`), whether or not it differs from the default: the checkpoint's own value may not be the default.
    Group choices (`generation=greedy`) and deletions are left to `changed_values`."""
    named: dict[str, Any] = {}
    for override in overrides:
        if override.startswith("~") or "=" not in override:
            continue
        key = override.split("=", 1)[0].lstrip("+")
        node: Any = config
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT and not isinstance(node, dict):
            named[key] = node
    return named


def training_config(overrides: Sequence[str]) -> Any:
    """The training config `overrides` compose, unresolved so interpolations survive."""
    return OmegaConf.to_container(compose(config_name="train", overrides=list(overrides)), resolve=False)


def chosen_values(after: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """{dotted key: its value in `after`} for what each group choice among `overrides` decides (`memory=none`,
    `generation=beam4`): the values in which the group's options differ, so that a choice counts even where it is
    the default, as a checkpoint's own choice may not be."""
    loader = GlobalHydra.instance().config_loader()
    chosen: dict[str, Any] = {}
    for index, override in enumerate(OverridesParser.create().parse_overrides(list(overrides))):
        if override.is_delete() or override.package is not None:
            continue
        prefix = override.input_line.split("=", 1)[0]
        for option in loader.get_group_options(override.key_or_group):
            if option == override.value():
                continue
            other = [*overrides[:index], f"{prefix}={option}", *overrides[index + 1 :]]
            try:
                alternative = training_config(other)
            except HydraException:  # an option the rest of the command cannot take (an experiment overriding it)
                continue
            chosen.update(changed_values(alternative, after))
            chosen.update(emptied_node(alternative, after, override.key_or_group.replace("/", ".")))
    return chosen


def emptied_node(before: dict[str, Any], after: dict[str, Any], key: str) -> dict[str, Any]:
    """{key: None} where another option of the group fills the node at the dotted `key` and the chosen one leaves it
    empty (`peft=none`): `changed_values` reads the keys of `after`, so it cannot see them go."""
    for part in key.split("."):
        before = before.get(part) if isinstance(before, dict) else None
        after = after.get(part) if isinstance(after, dict) else None
    return {key: None} if before and not after else {}


def command_line_changes(overrides: Sequence[str], tool_cfg: DictConfig) -> dict[str, Any]:
    """What `overrides` change in the default training config, plus every value they set by name or decide by a
    group choice; overrides of the tool's own keys (`ckpt_path`, the checkpoint it reads, and those its config adds
    to the training config's: `split`, `input`, ...) are left out. Needs an initialised Hydra (inside a
    `@hydra.main` app)."""
    before = training_config([])
    own_keys = {"ckpt_path", *(set(tool_cfg) - set(before))}
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in own_keys]
    after = training_config(kept)
    named = {**chosen_values(after, kept), **named_values(after, kept)}
    return merge_changes(changed_values(before, after), named)


def merge_changes(changed: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """`changed` and `named` together. A new subtree made only of values set by name (`++model.memory.top_k=64`
    where the default has no memory) is left to those values, set one by one: on a checkpoint trained with memory
    they change its `top_k` and keep its window, where the whole subtree would replace its settings."""
    kept = {
        key: value
        for key, value in changed.items()
        if not (isinstance(value, dict) and changed_values(_ABSENT, value, f"{key}.").keys() <= named.keys())
    }
    return {**kept, **named}


def checkpoint_tool(
    config_name: str, run: Callable[[DictConfig, dict[str, Any]], Any], check: Callable[[DictConfig], None]
) -> Callable[[], None]:
    """The `main()` of a tool that starts from a checkpoint: `run(cfg, changes)`, where `changes` is what the
    command line changes (above). An unset `ckpt_path`, what `check(cfg)` refuses, and a `ckpt_path` that is no
    checkpoint file are named before `run`'s module loads."""

    def run_from_checkpoint(cfg: DictConfig) -> Any:
        require_checkpoint(cfg.ckpt_path)
        check(cfg)
        checkpoint_file(cfg.ckpt_path)
        return run(cfg, command_line_changes(HydraConfig.get().overrides.task, cfg))

    return entry_point(config_name, run_from_checkpoint)
