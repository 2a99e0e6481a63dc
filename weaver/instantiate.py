"""Building objects from config nodes, with errors that name the config key instead of a deep traceback."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from weaver.data.datamodule import PairBuilder, pair_builder_for
from weaver.errors import ConfigError, WeaverError, call_naming_refusals
from weaver.models.causal_lm import CausalLM
from weaver.models.weaver import saved_model_path
from weaver.utils.hardware import check_devices


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, with `kwargs` passed to the target as they are.

    (Hydra would merge them into the config, turning a dataclass argument into a DictConfig.)
    A user-fixable failure is re-raised as a short message about `key`.
    """
    try:
        factory = hydra.utils.instantiate(node, _partial_=True)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, WeaverError):
            raise cause from None
        raise ConfigError(f"{key}: {cause or error}") from error
    check_keys(factory, key)
    check_value_types(factory, key)
    try:
        inspect.signature(factory).bind_partial(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{key}: {error} (check the keys under '{key}')") from error
    if node.get("_partial_"):  # the config asks for a factory, completed later (optimizers, schedulers)
        return functools.partial(factory, **kwargs)
    return call_naming_refusals(key, (MisconfigurationException, ValueError, TypeError), factory, **kwargs)


def check_keys(factory: Any, key: str) -> None:
    """Config keys the target does not take, named before `inspect` reports them as a partial's repr."""
    if not isinstance(factory, functools.partial):
        return
    parameters = inspect.signature(factory.func).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    unknown = [f"{key}.{name}" for name in factory.keywords if name not in parameters]
    if unknown:
        target = f"{factory.func.__module__}.{factory.func.__qualname__}"
        raise ConfigError(f"{', '.join(unknown)}: not an option of {target} (its options: {', '.join(parameters)}).")


PLAIN_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def plain_types(annotation: Any) -> tuple[type, ...] | None:
    """The config value types `annotation` allows, where it is made only of plain types (`int`, `float | None`); None
    where it holds anything else (a list, a Literal, a path), which the target checks itself. A tensor is no config
    value: `float | Tensor` (an optimizer's lr) allows a number."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    allowed = []
    for option in options or (annotation,):
        if option is torch.Tensor:
            continue
        if option not in PLAIN_TYPES:
            return None
        allowed.append(option)
    return tuple(allowed) or None


def check_value_types(factory: Any, key: str) -> None:
    """A value of the wrong type for a target (`trainer.max_steps=abc`, `optimizer.lr=abc`, a fractional
    `trainer.max_steps=1.5`, `tokenizer.vocab_size=abc`), named with the type its annotation asks for, before the
    target compares it with a number somewhere inside."""
    if not isinstance(factory, functools.partial):
        return
    target = factory.func.__init__ if inspect.isclass(factory.func) else factory.func
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations that do not resolve outside their library: nothing to check against
        return
    own = factory.func.__module__.startswith("weaver.")
    for name, value in factory.keywords.items():
        if value is None and own:  # unset: Weaver's targets say what to set it to
            continue
        allowed = plain_types(hints.get(name))
        if allowed is not None and not takes(allowed, value):
            raise wrong_type(key, name, value, allowed)


def takes(allowed: tuple[type, ...], value: Any) -> bool:
    """Whether a value of one of the `allowed` types is given: an integer is a number, true is no integer."""
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def wrong_type(key: str, name: str, value: Any, allowed: tuple[type, ...]) -> ConfigError:
    expected = " or ".join(PLAIN_TYPES[kind] for kind in allowed)
    return ConfigError(f"{key}.{name}={value!r}: expected {expected}.")


def build_named(nodes: DictConfig | None, key: str) -> list[Any]:
    """Callbacks and loggers are dicts of named nodes, so each can be tuned or removed by name."""
    return [build(node, f"{key}.{name}") for name, node in (nodes or {}).items() if node and "_target_" in node]


# Trainer values Lightning takes at start and divides by some way into the run; the least each may be.
TRAINER_FLOORS = {"val_check_interval": 0, "accumulate_grad_batches": 0, "check_val_every_n_epoch": 0}
TRAINER_MINIMA = {"log_every_n_steps": 0, "gradient_clip_val": 0}  # 0: no logging, no clipping


def check_trainer_values(node: DictConfig) -> None:
    for key, floor in TRAINER_FLOORS.items():
        value = node.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= floor:
            raise ConfigError(f"trainer.{key}={value} must be > {floor}.")
    for key, least in TRAINER_MINIMA.items():
        value = node.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < least:
            raise ConfigError(f"trainer.{key}={value} must be >= {least} ({least}: none).")


def build_trainer(node: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Lightning Trainer of `node` (`cfg.trainer`), once its device count is known to fit this machine and its
    values to be ones Lightning can run with (it refuses some only where it divides by them, some way in)."""
    check_trainer_values(node)
    check_devices(str(node.get("accelerator", "auto")), node.get("devices", "auto"))
    return build(node, "trainer", **kwargs)


PRETRAINED_TOKENIZER = "weaver.data.PretrainedTokenizer"


def build_tokenizer(cfg: DictConfig) -> Any:
    """The tokenizer spec of `cfg.tokenizer`. A model started from saved weights (`model.init_from`) reads its ids
    through the tokenizer saved with it: another one (trained anew, or loaded from elsewhere) would silently give
    every embedding a different token, so it is refused before any data is read."""
    init_from = cfg.model.get("init_from")
    if init_from is not None:
        saved_model_path(init_from)  # named as the model's key, before the tokenizer looks for its files there
        source, target = cfg.tokenizer.get("name_or_path"), cfg.tokenizer.get("_target_")
        if target != PRETRAINED_TOKENIZER or source != init_from:
            given = (
                f"tokenizer.name_or_path={source}" if target == PRETRAINED_TOKENIZER else f"tokenizer._target_={target}"
            )
            raise ConfigError(
                f"model.init_from='{init_from}' brings its own tokenizer, but the config asks for another ({given}): "
                "drop the tokenizer override (the model's tokenizer is used), or train from scratch with a model "
                "config that has no init_from (e.g. model=weaver_small)."
            )
    return build(cfg.tokenizer, "tokenizer")


def build_pair_builder(data: DictConfig) -> PairBuilder:
    """How the data config `data` turns rows into examples, built as its datamodule builds it."""
    pair_builder = build(data.pair_builder, "data.pair_builder") if data.get("pair_builder") else None
    return pair_builder_for(pair_builder, data.get("source_field"), data.get("target_field"))


def build_model(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, saved_config: str | None = None) -> nn.Module:
    """`cfg.model` sized for `tokenizer`, with `cfg.peft` adapters when set. A model node that checks the data's
    lengths gets them from `cfg.data` as it is now: a restored run's stored copy may predate an override
    (`eval.py ... data.max_source_length=65536`). `saved_config`: a restored checkpoint's model config files, for
    the builders of models that start from saved weights (a pretrained backbone, `model.init_from`) to rebuild the
    model without them (see `weaver.models.pretrained.pretrained_or_random`, `weaver.models.load_weaver`)."""
    lengths = ("max_source_length", "max_target_length")
    extra: dict[str, Any] = {key: cfg.data[key] for key in lengths if key in cfg.model}
    if saved_config is not None and takes_saved_config(cfg.model):
        extra["saved_config"] = saved_config
    model = build(cfg.model, "model", tokenizer=tokenizer, **extra)
    if cfg.get("peft"):
        model = build(cfg.peft, "peft")(model)
    if cfg.data.get("packing") and isinstance(model, CausalLM):  # before the data is read, not at the first step
        model.check_packing()
    return model


def takes_saved_config(node: DictConfig) -> bool:
    """Whether a model node's builder rebuilds a checkpoint's model from its saved config files (the builders of
    models that start from saved weights); a target that does not import is left to `build` to name."""
    try:
        builder = hydra.utils.get_object(node._target_)
    except Exception:  # any import failure: `build` reports it against the model node
        return False
    return "saved_config" in inspect.signature(builder).parameters


def build_task(cfg: DictConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> LightningModule:
    """The task's LightningModule around `model`, with its optimizer, schedule and decoding settings."""
    return build(
        cfg.task,
        "task",
        model=model,
        tokenizer=tokenizer,
        optimizer=build(cfg.optimizer, "optimizer"),
        scheduler=build(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None,
        generation=build(cfg.generation, "generation"),
    )
