"""Parameter-efficient fine-tuning from `peft` (`peft=lora|adalora|adapter|prefix|prompt|ia3`).

Each method freezes the model and trains what it adds: low-rank updates (LoRA; AdaLoRA, which also moves rank
between matrices as training goes; bottleneck adapters on the feed-forward outputs), learned rescaling vectors
(IA3), or virtual tokens (prefix and prompt tuning). All of them adapt HuggingFace encoder-decoders and decoder-only
models; the weight-update methods and IA3 adapt the native Weaver model too. The weight-update methods merge into
the weights on export; virtual tokens cannot, and export as an adapter folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from peft import (
    AdaLoraConfig,
    AdaLoraModel,
    IA3Config,
    LoraConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
)
from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
from torch import Tensor, nn

from weaver.errors import ConfigError
from weaver.models.pretrained import HFBackbone

log = logging.getLogger(__name__)

# Every attention input projection of the native model: fused Q/K/V (self-attention), Q and fused K/V (cross).
WEAVER_TARGET_MODULES = ("qkv", "q", "kv")
# The native model's feed-forward output projections (`FeedForward.down`).
WEAVER_FEED_FORWARD_OUTPUTS = ("down",)


class PeftMethod:
    """Wraps a model in a `peft` method; a subclass says how to configure it (`peft_config`)."""

    # The `peft=` option, for messages.
    name: str
    # Whether the native model, and an HF one with memory, can take it (virtual tokens need a HuggingFace model's
    # embeddings and caches, and its encoder run by peft on the ids, which memory reads in windows itself).
    adapts_native = True

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        """The method's config; `task_type` is None for the native model."""
        raise NotImplementedError

    def __call__(self, model: nn.Module) -> nn.Module:
        """The model with adapters: an HF backbone keeps its class (its backbone is wrapped), the native model
        becomes a `peft.PeftModel` that forwards `generate` and the rest to it."""
        hf = isinstance(model, HFBackbone)
        if not hf and not self.adapts_native:
            raise ConfigError(
                f"peft={self.name} needs a HuggingFace model (model=hf_seq2seq, model=hf_causal_lm or a preset of "
                "them); the native Weaver model takes peft=lora, adalora, adapter or ia3."
            )
        if hf and not self.adapts_native and getattr(model, "memory", None) is not None:
            raise ConfigError(
                f"peft={self.name} cannot be combined with model.memory: its virtual tokens would bypass the encoder "
                "that memory runs window by window; use peft=lora, adalora, adapter or ia3, or memory=none."
            )
        try:
            if hf:
                model.backbone = get_peft_model(model.backbone, self.peft_config(model.peft_task_type))
            else:
                config = self.peft_config(None)
                config.modules_to_save = list(model.added_modules) or None
                model = get_peft_model(model, config)
        except ValueError as error:  # peft's message names the modules it could not find, or the bad value
            raise ConfigError(f"peft ({self.name}): {error} (check the values under 'peft')") from error
        return model


def target_modules(modules: Sequence[str] | None, task_type: TaskType | None) -> list[str] | None:
    """The configured modules; else `peft`'s defaults per HF family (None), or the native model's projections."""
    if modules:
        return list(modules)
    return None if task_type is not None else list(WEAVER_TARGET_MODULES)


class LoRA(PeftMethod):
    """Low-rank updates of `target_modules` (names as `peft` matches them).

    `target_modules=None` picks the usual ones: `peft`'s defaults per HF family (T5 `q`/`v`, BART and Marian
    `q_proj`/`v_proj`, GPT-2 `c_attn`, Llama `q_proj`/`v_proj`), and every attention input projection for the
    native model.
    """

    name = "lora"

    def __init__(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        target_modules: Sequence[str] | None = None,
        bias: str = "none",
    ) -> None:
        if r < 1:
            raise ConfigError(f"peft.r must be >= 1, got {r}")
        self.r, self.alpha, self.dropout, self.bias = r, alpha, dropout, bias
        self.target_modules = target_modules

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            bias=self.bias,
            target_modules=target_modules(self.target_modules, task_type),
            task_type=task_type,
        )


class BottleneckAdapter(LoRA):
    """`peft=adapter`: a `bottleneck`-wide adapter beside each feed-forward block's output projection, adding its
    output to what the block writes into the residual stream. `peft` has no Houlsby-style adapter (and the
    maintained `adapters` library needs transformers 4.x), so this is its closest method: LoRA on the feed-forward
    output layers, the linear form of He et al. (2022)'s parallel adapter, without the nonlinearity between the
    down- and up-projection. It merges into the weights like LoRA.

    `target_modules=None` picks the feed-forward output layers: `peft`'s per HF family (T5 `wo`, BART and Marian
    `fc2`, GPT-2 `mlp.c_proj`, Llama `down_proj`), the native model's `down`."""

    name = "adapter"

    def __init__(self, bottleneck: int = 16, dropout: float = 0.05, target_modules: Sequence[str] | None = None):
        if bottleneck < 1:
            raise ConfigError(f"peft.bottleneck must be >= 1, got {bottleneck}")
        super().__init__(r=bottleneck, alpha=bottleneck, dropout=dropout, target_modules=target_modules)

    def __call__(self, model: nn.Module) -> nn.Module:
        if self.target_modules:
            return super().__call__(model)
        return BottleneckAdapter(self.r, self.dropout, feed_forward_outputs(model))(model)


def feed_forward_outputs(model: nn.Module) -> list[str]:
    """The names of `model`'s feed-forward output layers, as `peft` matches them."""
    if not isinstance(model, HFBackbone):
        return list(WEAVER_FEED_FORWARD_OUTPUTS)
    model_type = model.backbone.config.model_type
    modules = TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type)
    if not modules:
        raise ConfigError(
            f"peft=adapter does not know the feed-forward output layers of a '{model_type}' model: name them with "
            "peft.target_modules=[...]"
        )
    return list(modules)


class AdaLoRA(PeftMethod):
    """LoRA whose ranks start at `init_r` per matrix and are pruned, by importance, to an average of `target_r`
    (Zhang et al. 2023): after `tinit` warm-up steps, every `deltaT` steps, until `tfinal` steps before the end.

    The schedule needs the run's length: `total_step` (default: `trainer.max_steps`) is replaced by the trainer's
    real count of optimizer steps when training starts. The task calls `update_and_allocate` after every step, and
    adds to its loss the penalty `orth_reg_weight` puts on each P and Q's distance from orthogonality
    (`orthogonal_penalty`), which `peft` adds only to a loss the model computes itself.
    """

    name = "adalora"

    def __init__(
        self,
        init_r: int = 12,
        target_r: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        tinit: int = 0,
        tfinal: int = 0,
        deltaT: int = 1,  # noqa: N803 (peft's name)
        total_step: int | None = None,
        orth_reg_weight: float = 0.5,
        target_modules: Sequence[str] | None = None,
    ) -> None:
        if isinstance(orth_reg_weight, bool) or not isinstance(orth_reg_weight, int | float) or orth_reg_weight < 0:
            raise ConfigError(f"peft.orth_reg_weight must be a number >= 0, got {orth_reg_weight!r}.")
        if total_step is None or total_step <= 0:
            raise ConfigError(
                f"peft.total_step={total_step}: AdaLoRA schedules its ranks over the run's steps; set "
                "trainer.max_steps (which peft.total_step follows) or peft.total_step to a positive count."
            )
        check_rank_schedule(total_step, tinit, tfinal)  # from trainer.max_steps; checked again once training starts
        self.init_r, self.target_r, self.alpha, self.dropout = init_r, target_r, alpha, dropout
        self.tinit, self.tfinal, self.delta_t, self.total_step = tinit, tfinal, deltaT, total_step
        self.orth_reg_weight, self.target_modules = float(orth_reg_weight), target_modules

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            tinit=self.tinit,
            tfinal=self.tfinal,
            deltaT=self.delta_t,
            total_step=self.total_step,
            orth_reg_weight=self.orth_reg_weight,
            target_modules=target_modules(self.target_modules, task_type),
            task_type=task_type,
        )


class IA3(PeftMethod):
    """Learned vectors that rescale the keys, values and feed-forward activations (Liu et al. 2022): the fewest
    trainable parameters of the weight-update methods. `target_modules` and `feedforward_modules` (a subset of them)
    default to `peft`'s per HF family, and to the attention projections for the native model."""

    name = "ia3"

    def __init__(
        self, target_modules: Sequence[str] | None = None, feedforward_modules: Sequence[str] | None = None
    ) -> None:
        self.target_modules, self.feedforward_modules = target_modules, feedforward_modules

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        modules = target_modules(self.target_modules, task_type)
        feedforward = list(self.feedforward_modules) if self.feedforward_modules else None
        if task_type is None and feedforward is None:
            feedforward = []
        return IA3Config(target_modules=modules, feedforward_modules=feedforward, task_type=task_type)


class PrefixTuning(PeftMethod):
    """`num_virtual_tokens` trained key/value vectors put before every layer's attention (Li & Liang 2021);
    `prefix_projection` learns them through a small MLP instead."""

    name = "prefix"
    adapts_native = False

    def __init__(self, num_virtual_tokens: int = 20, prefix_projection: bool = False) -> None:
        self.num_virtual_tokens, self.prefix_projection = num_virtual_tokens, prefix_projection

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        return PrefixTuningConfig(
            num_virtual_tokens=self.num_virtual_tokens, prefix_projection=self.prefix_projection, task_type=task_type
        )


class PromptTuning(PeftMethod):
    """`num_virtual_tokens` trained input embeddings put before the input (Lester et al. 2021)."""

    name = "prompt"
    adapts_native = False

    def __init__(self, num_virtual_tokens: int = 20) -> None:
        self.num_virtual_tokens = num_virtual_tokens

    def peft_config(self, task_type: TaskType | None) -> PeftConfig:
        return PromptTuningConfig(num_virtual_tokens=self.num_virtual_tokens, task_type=task_type)


def peft_model_of(model: nn.Module) -> PeftModel | None:
    """The `peft` wrapper inside a task model, if it has adapters."""
    inner = model.backbone if isinstance(model, HFBackbone) else model
    return inner if isinstance(inner, PeftModel) else None


def can_merge(model: nn.Module) -> bool:
    """Whether the adapters fold into the weights: weight updates do, virtual tokens do not."""
    peft_model = peft_model_of(model)
    return peft_model is not None and not peft_model.active_peft_config.is_prompt_learning


def merge_adapters(model: nn.Module) -> nn.Module:
    """The same model with its adapters folded into the weights (plain modules again)."""
    if not can_merge(model):
        return model
    merged = peft_model_of(model).merge_and_unload()
    if isinstance(model, HFBackbone):
        model.backbone = merged
        return model
    return merged


def adalora_of(model: nn.Module) -> AdaLoraModel | None:
    peft_model = peft_model_of(model)
    tuner = peft_model.base_model if peft_model is not None else None
    return tuner if isinstance(tuner, AdaLoraModel) else None


def orthogonal_penalty(model: nn.Module) -> Tensor | None:
    """AdaLoRA's regulariser (None without AdaLoRA): `orth_reg_weight` times the mean, over the adapter's P (lora_B)
    and Q (lora_A) matrices, of the Frobenius distance of P^T P and Q Q^T from the identity, as `peft` computes it,
    keeping the SVD-shaped update's singular vectors orthogonal so pruning a singular value prunes a direction."""
    tuner = adalora_of(model)
    if tuner is None:
        return None
    adapter = tuner.trainable_adapter_name
    weight = tuner.peft_config[adapter].orth_reg_weight
    distances = []
    for name, parameter in tuner.model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and adapter in name:
            covariance = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter
            identity = torch.eye(*covariance.shape, dtype=covariance.dtype, device=covariance.device)
            distances.append(torch.linalg.matrix_norm(covariance - identity))
    if not distances or weight == 0:
        return None
    return weight * torch.stack(distances).mean()


def schedule_ranks(model: nn.Module, total_steps: float) -> None:
    """AdaLoRA's rank schedule over the trainer's real count of optimizer steps (`estimated_stepping_batches`),
    known only once training starts."""
    tuner = adalora_of(model)
    if tuner is None:
        return
    config = tuner.peft_config[tuner.trainable_adapter_name]
    check_rank_schedule(total_steps, config.tinit, config.tfinal)
    tuner.rankallocator.set_total_step(int(total_steps))


def check_rank_schedule(total_steps: float, tinit: int, tfinal: int) -> None:
    if not math.isfinite(total_steps) or total_steps <= tinit + tfinal:
        raise ConfigError(
            f"peft=adalora: the run has {total_steps} optimizer steps, which leaves no room between peft.tinit="
            f"{tinit} and peft.tfinal={tfinal} to allocate ranks; set trainer.max_steps or lower them."
        )


def allocate_ranks(model: nn.Module, step: int) -> int | None:
    """AdaLoRA's `update_and_allocate` after an optimizer step, from the gradients still in place; the total rank
    left over every adapted matrix (None without AdaLoRA)."""
    tuner = adalora_of(model)
    if tuner is None:
        return None
    with torch.no_grad():
        tuner.update_and_allocate(step)
    pattern = tuner.peft_config[tuner.trainable_adapter_name].rank_pattern
    if not pattern:
        return int(tuner.rankallocator.init_bgt)
    return int(sum(sum(mask) for mask in pattern.values()))


# The rank allocator's running importance statistics, per adapted parameter name.
ALLOCATOR_SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")


def rank_allocator_state(model: nn.Module) -> dict[str, Any] | None:
    """AdaLoRA's importance scores and the rank pattern chosen so far (None without AdaLoRA): `peft` keeps them out
    of the module's state dict, and a resumed run needs them to go on with its schedule where it stopped."""
    tuner = adalora_of(model)
    if tuner is None:
        return None
    state = {name: dict(getattr(tuner.rankallocator, name)) for name in ALLOCATOR_SCORES}
    return {**state, "rank_pattern": tuner.peft_config[tuner.trainable_adapter_name].rank_pattern}


def load_rank_allocator_state(model: nn.Module, state: dict[str, Any] | None) -> None:
    """Puts back what `rank_allocator_state` saved, each score on its parameter's device."""
    tuner = adalora_of(model)
    if tuner is None or state is None:
        return
    devices = {name: parameter.device for name, parameter in tuner.model.named_parameters()}
    for name in ALLOCATOR_SCORES:
        scores = {key: value.to(devices[key]) for key, value in state[name].items()}
        setattr(tuner.rankallocator, name, scores)
    tuner.peft_config[tuner.trainable_adapter_name].rank_pattern = state["rank_pattern"]
