"""Rebuild a trained task from a checkpoint alone: the run config and tokenizer stored in it, and its weights.

Checkpoints are read with `weights_only=True`: tensors, numbers, strings and bytes only, never pickled objects.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from weaver.callbacks.run_config import BACKBONE_CONFIG_KEY, CONFIG_KEY, TOKENIZER_KEY
from weaver.config import config_dir, register_resolvers
from weaver.data import Seq2SeqDataModule
from weaver.data.tokenizer import wrap_fast
from weaver.errors import ConfigError, checkpoint_file, require_positive_int, unreadable_checkpoint
from weaver.instantiate import build_model, build_task
from weaver.models import WeaverModel, can_merge, merge_adapters, peft_model_of
from weaver.tasks.seq2seq import Seq2SeqTask

# The model targets of native Weaver models, which `model.init_from` starts a new run from.
NATIVE_MODEL_TARGETS = ("weaver.models.build_weaver", "weaver.models.load_weaver")
# Where Lightning keeps a data module's `state_dict` in a checkpoint.
DATA_STATE_KEY = Seq2SeqDataModule.__qualname__


@dataclass
class RestoredRun:
    cfg: DictConfig  # the composed config of the training run, resolved
    tokenizer: PreTrainedTokenizerBase
    task: Seq2SeqTask  # in eval mode, on the CPU
    data_state: dict[str, Any]  # the data module's (`Seq2SeqDataModule.load_state_dict`)


def read_checkpoint(path: str | Path | None, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at `path`; errors name the config `key` that gave it."""
    path = checkpoint_file(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails on a foreign file with whatever its parser meets first
        raise unreadable_checkpoint(path, key, f"torch.load raised {type(error).__name__}") from error
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{key}='{path}' holds a {type(checkpoint).__name__}, not a training checkpoint.")
    missing = [key for key in (CONFIG_KEY, TOKENIZER_KEY, "state_dict") if key not in checkpoint]
    if missing:
        raise ConfigError(f"{key}='{path}' is not a Weaver training checkpoint (it lacks {missing}).")
    return checkpoint


def written(files: dict[str, bytes] | None, folder: str) -> str | None:
    """`files` ({name: bytes}) written to `folder`, which is returned; None without files."""
    if files is None:
        return None
    for name, content in files.items():
        (Path(folder) / name).write_bytes(content)
    return folder


def restore_tokenizer(files: dict[str, bytes] | str, cfg: DictConfig) -> PreTrainedTokenizerBase:
    """From the `save_pretrained` files stored in the checkpoint; checkpoints of Weaver 0.1 stored only the
    `tokenizers` JSON of a trained tokenizer, which is wrapped as training wrapped it."""
    if isinstance(files, str):
        return wrap_fast(Tokenizer.from_str(files), cfg.tokenizer.get("extra_special_tokens") or ())
    with tempfile.TemporaryDirectory() as folder:
        return AutoTokenizer.from_pretrained(written(files, folder))


def restore_run(ckpt_path: str | Path, overrides: dict[str, Any] | None = None, key: str = "ckpt_path") -> RestoredRun:
    """The task of `ckpt_path` with its trained weights; `overrides` ({dotted key: value}, e.g.
    `{"generation.num_beams": 4}`) replace values of the stored config before anything is built."""
    register_resolvers()
    checkpoint = read_checkpoint(ckpt_path, key)
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    for name, value in with_prompt_template_followed(cfg, overrides or {}).items():
        OmegaConf.update(cfg, name, value, merge=False, force_add=True)
    for name in ("max_source_length", "max_target_length"):  # read by the model's checks before any data module's
        if cfg.data.get(name) is not None:
            require_positive_int(f"data.{name}", cfg.data[name])
    check_peft_method(checkpoint, cfg, ckpt_path, key)
    tokenizer = restore_tokenizer(checkpoint[TOKENIZER_KEY], cfg)
    with tempfile.TemporaryDirectory() as folder:
        saved_config = written(checkpoint.get(BACKBONE_CONFIG_KEY), folder)
        task = build_task(cfg, build_model(cfg, tokenizer, saved_config), tokenizer)
    check_weights_fit(task, checkpoint, cfg, f"{key}='{ckpt_path}'", "the overrides ask for", "drop those overrides")
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    return RestoredRun(cfg=cfg, tokenizer=tokenizer, task=task, data_state=checkpoint.get(DATA_STATE_KEY, {}))


PROMPT_TEMPLATE_KEYS = ("prompt_template", "model.prompt_template", "data.prompt_template")


def with_prompt_template_followed(cfg: DictConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides`, where one gives a decoder-only run a new prompt template, setting all three of its keys: the
    stored config is resolved, so `data.prompt_template` (which prompts are made from) no longer follows
    `model.prompt_template`, nor that the task's `prompt_template`, as in training."""
    given = [overrides[key] for key in PROMPT_TEMPLATE_KEYS if key in overrides]
    if not given or cfg.data.get("prompt_template") is None:  # an encoder-decoder takes no template
        return overrides
    return {**overrides, **dict.fromkeys(PROMPT_TEMPLATE_KEYS, given[-1])}


def peft_choice(peft: Any) -> str:
    """The `peft=` option a stored peft node came from (`lora`), found by its target; `none` without adapters."""
    if not peft:
        return "none"
    for option in sorted((config_dir() / "peft").glob("*.yaml")):
        if OmegaConf.load(option).get("_target_") == peft.get("_target_"):
            return option.stem
    return str(peft.get("_target_"))


def check_peft_method(checkpoint: dict[str, Any], cfg: DictConfig, path: str | Path, key: str) -> None:
    """Adapters trained with one method are no other method's: an override that changes it (`peft=ia3`, `peft=none`)
    is refused before the new method's settings meet the stored method's."""
    trained, asked = peft_choice(checkpoint[CONFIG_KEY].get("peft")), peft_choice(cfg.get("peft"))
    if asked != trained:
        raise ConfigError(
            f"{key}='{path}' was trained with peft={trained}, and a checkpoint's peft method cannot change after "
            f"training: drop peft={asked}."
        )


def leaf_values(config: Any, prefix: str) -> dict[str, Any]:
    """{dotted key: value} for every leaf of a plain config container."""
    if not isinstance(config, dict):
        return {prefix: config}
    values: dict[str, Any] = {}
    for name, value in config.items():
        values.update(leaf_values(value, f"{prefix}.{name}"))
    return values


def peft_description(peft: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """`peft=lora (r=8)`: the method, with the settings `other` sets otherwise (or lacks, unless null)."""
    other = other or {}
    shown = [
        f"{name}={value}"
        for name, value in (peft or {}).items()
        if name != "_target_" and other.get(name) != value and (name in other or value is not None)
    ]
    choice = f"peft={peft_choice(peft)}"
    return f"{choice} ({', '.join(shown)})" if shown else choice


def differences(trained: dict[str, Any], asked: dict[str, Any]) -> tuple[str, str]:
    """How two run configs' `peft` (else `model`) nodes differ, as each one's side: what decides the weights' names
    and shapes."""
    if trained.get("peft") != asked.get("peft"):
        same_method = peft_choice(trained.get("peft")) == peft_choice(asked.get("peft"))
        trained_peft, asked_peft = trained.get("peft"), asked.get("peft")
        return (
            peft_description(trained_peft, asked_peft if same_method else {}),
            peft_description(asked_peft, trained_peft if same_method else {}),
        )
    before, after = leaf_values(trained.get("model"), "model"), leaf_values(asked.get("model"), "model")
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    if not changed:
        return "another model", "this one"
    return ", ".join(f"{key}={before.get(key)}" for key in changed), ", ".join(
        f"{key}={after.get(key)}" for key in changed
    )


def check_weights_fit(
    task: nn.Module, checkpoint: dict[str, Any], cfg: DictConfig, source: str, asker: str, fix: str
) -> None:
    """Loading weights of other names or shapes fails with a page of missing and unexpected keys; this names the
    setting that differs instead (a LoRA checkpoint read with `peft=ia3` or `peft.r=4`)."""
    wanted = {name: tuple(tensor.shape) for name, tensor in task.state_dict().items()}
    stored = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    if wanted == stored:
        return
    asked = {
        node: OmegaConf.to_container(cfg[node], resolve=True) if cfg.get(node) else None for node in ("peft", "model")
    }
    trained, wanted_description = differences(checkpoint.get(CONFIG_KEY) or {}, asked)
    raise ConfigError(
        f"{source} was trained with {trained}, but {asker} {wanted_description}: its weights do not fit that "
        f"model; {fix}."
    )


def check_continuation(path: str | Path, cfg: DictConfig, task: nn.Module) -> None:
    """`train.py ckpt_path=...` with other peft or model settings than the checkpoint's run, named before Lightning
    fails to load it; memory-mapped, so the weights are not read twice."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    native = (checkpoint.get(CONFIG_KEY) or {}).get("model", {}).get("_target_") in NATIVE_MODEL_TARGETS
    start = (
        f"start from them with model=weaver_pretrained model.init_from='{path}'"
        if native
        else f"export them (python export.py ckpt_path='{path}' output_dir=<dir>) and set model.name_or_path=<dir>"
    )
    fix = f"to continue that run, drop those overrides; to fine-tune its weights with new settings, {start}"
    check_weights_fit(task, checkpoint, cfg, f"ckpt_path='{path}'", "this run asks for", fix)


def checkpoint_tokenizer(path: str | Path, key: str) -> PreTrainedTokenizerBase:
    """The tokenizer a training checkpoint stores, without building its model."""
    checkpoint = read_checkpoint(path, key)
    return restore_tokenizer(checkpoint[TOKENIZER_KEY], OmegaConf.create(checkpoint[CONFIG_KEY]))


def checkpoint_weaver(path: str | Path, key: str = "model.init_from") -> WeaverModel:
    """The native Weaver model a training checkpoint holds (mergeable adapters merged in), to start another run."""
    return plain_weaver(
        restore_run(path, key=key).task.model, f"{key}='{path}'", "train on from it with resume or ckpt_path"
    )


def plain_weaver(model: nn.Module, named: str, unmergeable_fix: str) -> WeaverModel:
    """`model` (read from `named`, e.g. "model.init_from='run.ckpt'") as a plain native Weaver model, its mergeable
    adapters merged in; virtual-token adapters and other kinds of model are refused with what to do instead."""
    if peft_model_of(model) is not None:
        if not can_merge(model):
            raise ConfigError(f"{named}: its adapters cannot be merged into the weights; {unmergeable_fix} instead.")
        model = merge_adapters(model)
    if not isinstance(model, WeaverModel):
        hf_config = getattr(model, "hf_config", None) or getattr(model, "config", None)
        model_config = "hf_seq2seq" if getattr(hf_config, "is_encoder_decoder", False) else "hf_causal_lm"
        raise ConfigError(
            f"{named} holds a {type(model).__name__}, not a native Weaver model: start from its exported folder "
            f"(python export.py) with its own model config (model={model_config} model.name_or_path=...)."
        )
    return model
