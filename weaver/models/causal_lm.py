"""HuggingFace decoder-only language models (GPT-2, Llama, ...) behind the interface every task uses.

Batches keep the encoder-decoder layout: `input_ids` are the prompts (left-padded, `weaver.prompts`) and `labels`
their completions. `forward` runs prompt and completion as one row and returns the logits of the completion's
positions only, aligned with `labels`, so `Seq2SeqTask`'s training loss, exact validation loss and perplexity cover
completion tokens alone. `generate` continues the prompts with HF `generate` (KV cache) and returns the new tokens
only, cut at EOS or a stop string. `packed_logits` scores rows that pack several examples (`data.packing`, training
only) under a block-diagonal causal mask. `build_causal_lm` is the Hydra builder of `model=hf_causal_lm`.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import transformers
from peft import PeftModel, PeftType, TaskType
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.models.pretrained import (
    HFBackbone,
    check_one_source,
    enable_activation_checkpointing,
    fit_embeddings,
    pretrained_or_random,
)
from weaver.prompts import PromptTemplate

log = logging.getLogger(__name__)


class CausalLM(HFBackbone):
    """A `transformers` decoder-only model as a Weaver task model. `tokenizer` finds the tokens that hold a stop
    string (`stop_strings`, e.g. a newline after a one-line translation)."""

    peft_task_type = TaskType.CAUSAL_LM

    def __init__(
        self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_strings: Sequence[str] = ()
    ) -> None:
        super().__init__(backbone)
        self.tokenizer = tokenizer
        self.stop_strings = [str(stop) for stop in stop_strings]

    @property
    def decoder_start_token_id(self) -> int:
        """Any id: the prompt's last token plays the start token's part, and `forward` drops the start column."""
        return int(self.tokenizer.pad_token_id)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Logits (B, T, V) of the T completion positions: position t predicts completion token t from the prompt
        and the completion before it (`decoder_input_ids` is the start token and the completion, shifted right)."""
        completion = decoder_input_ids[:, 1:]
        sequence = torch.cat([input_ids, completion], dim=1)
        # The completion's padding is on the right, where causal attention keeps it from every real position.
        mask = torch.cat([attention_mask.long(), torch.ones_like(completion)], dim=1)
        kwargs: dict[str, Any] = {}
        if self.takes_position_ids:  # left padding: every prompt starts at position 0
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        outputs = self.backbone(
            input_ids=sequence, attention_mask=mask, logits_to_keep=decoder_input_ids.size(1), **kwargs
        )
        return outputs.logits[:, -decoder_input_ids.size(1) :]

    def packed_logits(self, input_ids: Tensor, position_ids: Tensor, document_ids: Tensor, scored: Tensor) -> Tensor:
        """Logits (N, V) of the N `scored` positions of packed rows (`weaver.data.packing`), in row-major order.

        A token attends to the tokens before it in its own example (`document_ids`), and counts its position from
        the example's start where the model takes position ids, so each example's logits are those it has alone.
        The body runs on every token and the output layer on the scored positions only (those that predict a
        completion token), as `forward` keeps the completion's alone."""
        self.check_packing()
        model = self.backbone.get_base_model() if isinstance(self.backbone, PeftModel) else self.backbone
        kwargs: dict[str, Any] = {"position_ids": position_ids} if self.takes_position_ids else {}
        mask = document_mask(document_ids, model.config._attn_implementation, model.dtype)
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False, **kwargs).last_hidden_state
        return model.get_output_embeddings()(hidden[scored])

    def check_packing(self) -> None:
        """Packing needs one attention mask over the rows' own tokens, as written by `document_mask`."""
        config = getattr(self.backbone, "active_peft_config", None)
        if config is not None and config.is_prompt_learning:
            raise ConfigError(
                f"data.packing=true cannot go with peft={config.peft_type.value.lower().removesuffix('_tuning')}: "
                "its virtual tokens would be shared by every example of a row; set data.packing=false."
            )
        implementation = self.hf_config._attn_implementation
        if implementation not in ("sdpa", "eager"):
            raise ConfigError(
                f"data.packing=true needs attn_implementation sdpa or eager (the model uses {implementation}); set "
                "data.packing=false."
            )
        if getattr(self.hf_config, "final_logit_softcapping", None) or getattr(self.hf_config, "logit_scale", None):
            raise ConfigError(
                f"data.packing=true: {self.hf_config.model_type} rescales its logits after the output layer, which "
                "packed rows skip; set data.packing=false."
            )

    @property
    def takes_position_ids(self) -> bool:
        """`peft` ignores position ids (with a warning) for prompt tuning, and shifts them itself for prefixes."""
        config = getattr(self.backbone, "active_peft_config", None)
        return config is None or not config.is_prompt_learning or config.peft_type == PeftType.PREFIX_TUNING

    def training_flops(self, batch_size: int, source_length: int, target_length: int) -> int:
        """An estimate for MFU: 6 per weight matrix entry (the tied output projection counted once) per token of
        the prompt and completion (Kaplan et al. 2020); attention score products are left out."""
        weights = sum(p.numel() for p in self.backbone.parameters() if p.dim() == 2)
        return 6 * batch_size * weights * (source_length + target_length)

    def hf_generation_config(self, config: GenerationConfig, **model_settings: Any) -> transformers.GenerationConfig:
        if self.stop_strings:
            model_settings.setdefault("stop_strings", self.stop_strings)
        return super().hf_generation_config(config, **model_settings)

    def generate(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, generation_config: GenerationConfig | None = None
    ) -> Tensor:
        """The completions (B, L) of left-padded prompts: new tokens only, EOS included, padding after EOS and
        from the token where a stop string begins on (HF stops where it ends, and keeps it)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id)
        kwargs = {"tokenizer": self.tokenizer} if self.stop_strings else {}
        sequences = self.seeded_generate(input_ids, attention_mask, generation_config or GenerationConfig(), **kwargs)
        return self.cut_at_stop(sequences[:, input_ids.size(1) :])

    def cut_at_stop(self, tokens: Tensor) -> Tensor:
        """`tokens` padded from the token where a stop string first begins, one of several tokens too. Found in
        decoded text (by bisection over the row's prefixes, then over the suffixes of the shortest that holds one),
        as the tokenizer joins tokens, spaces and all."""
        if not self.stop_strings:
            return tokens
        cut = tokens.clone()
        for row, ids in enumerate(tokens.tolist()):

            def holds(start: int, end: int, ids: list[int] = ids) -> bool:
                text = self.tokenizer.decode(ids[start:end], skip_special_tokens=True)
                return any(stop in text for stop in self.stop_strings)

            if not holds(0, len(ids)):
                continue
            end = bisect.bisect_left(range(1, len(ids) + 1), True, key=lambda k: holds(0, k)) + 1
            start = bisect.bisect_left(range(end), True, key=lambda j: not holds(j, end)) - 1
            cut[row, start:] = self.tokenizer.pad_token_id
        return cut


def document_mask(document_ids: Tensor, implementation: str, dtype: torch.dtype) -> Tensor:
    """The 4D mask (R, 1, W, W) that HF attention takes as it is: query q sees key k <= q of the same document;
    boolean for `sdpa`, additive for `eager`. Padding (document -1) sees padding, so no query sees nothing."""
    width = document_ids.size(1)
    causal = torch.ones(width, width, dtype=torch.bool, device=document_ids.device).tril()
    allowed = (document_ids[:, None, :, None] == document_ids[:, None, None, :]) & causal
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def check_context(
    config: transformers.PretrainedConfig,
    model: str,
    prompt_tokens: int,
    max_source_length: int | None,
    max_target_length: int | None,
) -> None:
    """Prompt (source and template) and completion must fit the model's positions together."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or max_source_length is None or max_target_length is None:
        return
    total = max_source_length + prompt_tokens + max_target_length
    if total > limit:
        raise ConfigError(
            f"data.max_source_length={max_source_length} + {prompt_tokens} prompt template tokens + "
            f"data.max_target_length={max_target_length} = {total} exceed the {limit} positions of {model}; "
            "lower data.max_source_length or data.max_target_length."
        )


def build_causal_lm(
    tokenizer: PreTrainedTokenizerBase,
    name_or_path: str | None = None,
    from_config: Mapping[str, Any] | str | None = None,
    prompt_template: str = "{source}",
    stop_strings: Sequence[str] = (),
    trust_remote_code: bool = False,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    activation_checkpointing: bool = False,
    memory: Mapping[str, Any] | None = None,
    saved_config: str | None = None,
) -> CausalLM:
    """Hydra builder (`_target_: weaver.models.build_causal_lm`) for `model=hf_causal_lm`: a pretrained model from
    `name_or_path`, or a random one from `from_config` trained from scratch. `saved_config`: see
    `pretrained_or_random`."""
    if memory is not None:
        raise ConfigError(
            "model.memory: a decoder-only model has no encoder to read a long source in windows, nor "
            "cross-attention to recall from it; use memory=none (or an encoder-decoder: model=hf_seq2seq)"
        )
    check_one_source(name_or_path, from_config)
    template = PromptTemplate(prompt_template)  # a bad template fails before any weights are loaded
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError(
            f"The tokenizer ({tokenizer.name_or_path}) needs an EOS token, which ends completions and pads batches."
        )
    backbone, source = pretrained_or_random(
        AutoModelForCausalLM, name_or_path, from_config, tokenizer, trust_remote_code, saved_config
    )
    model = f"{source} ({backbone.config.model_type})"
    check_context(backbone.config, model, template.overhead(tokenizer), max_source_length, max_target_length)
    fit_embeddings(backbone, tokenizer)
    backbone.config.pad_token_id = backbone.generation_config.pad_token_id = tokenizer.pad_token_id
    if backbone.generation_config.eos_token_id is None:
        backbone.generation_config.eos_token_id = tokenizer.eos_token_id
    if activation_checkpointing:
        enable_activation_checkpointing(backbone)
    # `from_pretrained` returns eval mode; Lightning keeps each module's mode, so dropout would stay off in training.
    return CausalLM(backbone.train(), tokenizer, stop_strings=stop_strings)
