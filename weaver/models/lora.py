"""LoRA adapters from `peft`, for HuggingFace backbones and the native Weaver model alike (`peft=lora`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from weaver.errors import ConfigError
from weaver.models.pretrained import PretrainedSeq2Seq

log = logging.getLogger(__name__)

# Every attention input projection of the native model: fused Q/K/V (self-attention), Q and fused K/V (cross).
WEAVER_TARGET_MODULES = ("qkv", "q", "kv")


class LoRA:
    """Freezes the model and trains low-rank updates of `target_modules` (names as `peft` matches them).

    `target_modules=None` picks the usual ones: `peft`'s defaults per HF family (T5 `q`/`v`, BART and Marian
    `q_proj`/`v_proj`), and every attention input projection for the native model.
    """

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
        self.target_modules = list(target_modules) if target_modules else None

    def config(self, **kwargs: object) -> LoraConfig:
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, bias=self.bias, **kwargs)

    def __call__(self, model: nn.Module) -> nn.Module:
        """The model with adapters: a `PretrainedSeq2Seq` keeps its class (its backbone is wrapped), the native
        model becomes a `peft.PeftModel` that forwards `generate` and the rest to it."""
        try:
            if isinstance(model, PretrainedSeq2Seq):
                config = self.config(target_modules=self.target_modules, task_type=TaskType.SEQ_2_SEQ_LM)
                model.backbone = get_peft_model(model.backbone, config)
            else:
                model = get_peft_model(model, self.config(target_modules=self.target_modules or WEAVER_TARGET_MODULES))
        except ValueError as error:  # peft's message names the modules it could not find
            raise ConfigError(f"peft.target_modules={self.target_modules}: {error}") from error
        return model


def peft_model_of(model: nn.Module) -> PeftModel | None:
    """The `peft` wrapper inside a task model, if it has adapters."""
    inner = model.backbone if isinstance(model, PretrainedSeq2Seq) else model
    return inner if isinstance(inner, PeftModel) else None


def merge_adapters(model: nn.Module) -> nn.Module:
    """The same model with its adapters folded into the weights (plain modules again)."""
    peft_model = peft_model_of(model)
    if peft_model is None:
        return model
    merged = peft_model.merge_and_unload()
    if isinstance(model, PretrainedSeq2Seq):
        model.backbone = merged
        return model
    return merged
