"""Rebuild a trained task from a checkpoint alone: the run config and tokenizer stored in it, and its weights.

Checkpoints are read with `weights_only=True`: tensors, numbers, strings and bytes only, never pickled objects.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from weaver.callbacks.run_config import BACKBONE_CONFIG_KEY, CONFIG_KEY, TOKENIZER_KEY
from weaver.config import register_resolvers
from weaver.data import Seq2SeqDataModule
from weaver.data.tokenizer import wrap_fast
from weaver.errors import ConfigError, require_checkpoint
from weaver.instantiate import build_model, build_task
from weaver.models import CausalLM, WeaverModel, can_merge, merge_adapters, peft_model_of
from weaver.tasks.seq2seq import Seq2SeqTask

# Where Lightning keeps a data module's `state_dict` in a checkpoint.
DATA_STATE_KEY = Seq2SeqDataModule.__qualname__


@dataclass
class RestoredRun:
    cfg: DictConfig  # the composed config of the training run, resolved
    tokenizer: PreTrainedTokenizerBase
    task: Seq2SeqTask  # in eval mode, on the CPU
    data_state: dict[str, Any]  # the data module's (`Seq2SeqDataModule.load_state_dict`)


def checkpoint_file(path: str | Path | None, key: str = "ckpt_path") -> Path:
    """`path`, checked without reading it whole: a file, and a complete zip archive, as `torch.save` writes (a
    truncated one lacks the directory at its end)."""
    require_checkpoint(path, key)
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}='{path}' is not a file.")
    if not zipfile.is_zipfile(path):
        raise unreadable_checkpoint(path, key, "it is no complete zip archive")
    return path


def unreadable_checkpoint(path: Path, key: str, why: str) -> ConfigError:
    return ConfigError(
        f"{key}='{path}' is not a readable checkpoint (truncated, or not a checkpoint at all: {why}). Give a .ckpt "
        "file from a run's checkpoints/ folder."
    )


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
    for key, value in with_prompt_template_followed(cfg, overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    tokenizer = restore_tokenizer(checkpoint[TOKENIZER_KEY], cfg)
    with tempfile.TemporaryDirectory() as folder:
        saved_config = written(checkpoint.get(BACKBONE_CONFIG_KEY), folder)
        task = build_task(cfg, build_model(cfg, tokenizer, saved_config), tokenizer)
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


def checkpoint_tokenizer(path: str | Path, key: str) -> PreTrainedTokenizerBase:
    """The tokenizer a training checkpoint stores, without building its model."""
    checkpoint = read_checkpoint(path, key)
    return restore_tokenizer(checkpoint[TOKENIZER_KEY], OmegaConf.create(checkpoint[CONFIG_KEY]))


def checkpoint_weaver(path: str | Path) -> WeaverModel:
    """The native Weaver model a training checkpoint holds (mergeable adapters merged in), to start another run."""
    model = restore_run(path, key="model.init_from").task.model
    if peft_model_of(model) is not None:
        if not can_merge(model):
            raise ConfigError(
                f"model.init_from='{path}': its adapters cannot be merged into the weights; train on from it with "
                "resume or ckpt_path instead."
            )
        model = merge_adapters(model)
    if not isinstance(model, WeaverModel):
        model_config = "hf_causal_lm" if isinstance(model, CausalLM) else "hf_seq2seq"
        raise ConfigError(
            f"model.init_from='{path}' holds a {type(model).__name__}, not a native Weaver model: export it (python "
            f"export.py) and load the folder with its own model config (model={model_config} "
            "model.name_or_path=...)."
        )
    return model
