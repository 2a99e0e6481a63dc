"""HuggingFace pretrained seq2seq backbones (T5, BART, Marian, mBART, ...) behind the interface every task uses.

`PretrainedSeq2Seq` gives a `transformers` model the three things `Seq2SeqTask` needs: teacher-forced logits from
`forward(input_ids, attention_mask, decoder_input_ids)`, `generate(..., GenerationConfig)` through HF `generate`,
and `decoder_start_token_id`. `build_pretrained_seq2seq` is its Hydra builder (`model=hf_seq2seq`).

`HFBackbone`, its base, holds what every HF backbone shares (decoder-only ones too, `weaver.models.causal_lm`):
Weaver's decoding settings as HF's, seeded generation, loading with clear errors, embeddings grown with the
tokenizer.
"""

from __future__ import annotations

import copy
import difflib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from peft import TaskType
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from weaver.errors import ConfigError
from weaver.generation import GenerationConfig, RowStreams
from weaver.hub import load_pretrained
from weaver.models.hf_memory import beam_shared_memory, enable_recall
from weaver.models.memory import MemoryConfig, encode_in_windows, memory_from_settings
from weaver.utils.lockstep import in_lockstep

log = logging.getLogger(__name__)

# Our decoding knobs that have the same name and meaning in `transformers.GenerationConfig`.
SHARED_GENERATION_KEYS = (
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    "do_sample",
    "top_k",
    "top_p",
    "temperature",
)

# transformers' defaults for what its `generate` fills in from the model's own `generation_config` where unset.
DECODING_DEFAULTS = {
    key: value
    for key, value in transformers.GenerationConfig._get_default_generation_params().items()
    if value is not None and not key.endswith("_token_id")
}


class HFBackbone(nn.Module):
    """A `transformers` model (`backbone`, possibly wrapped by `peft`) as a Weaver task model: the shared part."""

    # How `peft` wraps this kind of backbone.
    peft_task_type: TaskType

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def hf_config(self) -> transformers.PretrainedConfig:
        return self.backbone.config

    def config_files(self) -> dict[str, bytes]:
        """The backbone's `config.json` and `generation_config.json` as {name: bytes}, as a checkpoint stores them:
        with its weights they rebuild the model where its pretrained folder is gone (`saved_backbone`)."""
        return {
            transformers.utils.CONFIG_NAME: self.hf_config.to_json_string().encode(),
            transformers.utils.GENERATION_CONFIG_NAME: self.backbone.generation_config.to_json_string().encode(),
        }

    def hf_generation_config(self, config: GenerationConfig, **model_settings: Any) -> transformers.GenerationConfig:
        """The model's own generation defaults with every decoding setting at transformers' global default, then
        Weaver's decoding settings and `model_settings` on top: a checkpoint's `generation_config.json` may hold
        decoding settings of its own (bart-large-cnn's `min_length`, `early_stopping`; a `repetition_penalty`) that
        `generate` would otherwise apply beside the `generation` group's, unseen. Its token conventions stay (special
        ids, suppressed tokens)."""
        hf_config = copy.deepcopy(self.backbone.generation_config)
        hf_config.update(**DECODING_DEFAULTS)
        updates: dict[str, Any] = {key: getattr(config, key) for key in SHARED_GENERATION_KEYS}
        updates["num_return_sequences"] = config.outputs_per_source
        if not config.do_sample:  # sampling-only knobs would make HF warn on every call
            updates.update(top_k=None, top_p=None, temperature=None)
        hf_config.update(**updates, **model_settings)
        return hf_config

    def seeded_generate(
        self, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig, **kwargs: Any
    ) -> Tensor:
        """HF `generate`'s sequences; sampled as Weaver's own search samples, each output row from a random stream of
        its own (`RowStreams`: a seeded source's samples do not depend on its batch), without touching the global
        RNG. ``kwargs`` may hold the encoder's outputs instead of reading ``input_ids`` (memory)."""
        inputs = kwargs if "encoder_outputs" in kwargs else {"input_ids": input_ids, **kwargs}
        hf_config = self.hf_generation_config(config)
        if config.do_sample:  # tempered and filtered by the streams' draw, which HF's warpers then leave as it is
            hf_config.update(temperature=1.0, top_k=0, top_p=1.0)
            streams = RowStreams(config, input_ids, attention_mask, config.outputs_per_source)
            inputs["logits_processor"] = transformers.LogitsProcessorList([StreamSampling(streams)])
        with torch.random.fork_rng(devices=[input_ids.device] if input_ids.is_cuda else []):
            return self.backbone.generate(attention_mask=attention_mask.long(), generation_config=hf_config, **inputs)


class StreamSampling(transformers.LogitsProcessor):
    """Weaver's sampling inside HF `generate`: HF applies its logits processors (minimum length, n-gram bans) first,
    then this one, which draws each row's next token from the row's stream and leaves that token the only one
    possible, so that HF's own draw takes it. HF's rows are the sources' in order, each repeated
    `num_return_sequences` times, as `RowStreams` numbers them; finished rows stay in the batch."""

    def __init__(self, streams: RowStreams) -> None:
        self.streams, self.step = streams, 0

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        chosen = self.streams.choose(scores, list(range(scores.size(0))), self.step)
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)


class PretrainedSeq2Seq(HFBackbone):
    """A `transformers` encoder-decoder as a Weaver task model. With ``memory``, a source of any length is read in
    windows and recalled from (`weaver.models.hf_memory`)."""

    peft_task_type = TaskType.SEQ_2_SEQ_LM

    def __init__(
        self,
        backbone: PreTrainedModel,
        forced_bos_token_id: int | None = None,
        memory: MemoryConfig | None = None,
        checkpoint_windows: bool = False,
    ) -> None:
        super().__init__(backbone)
        self.forced_bos_token_id = forced_bos_token_id
        self.memory = memory
        self.checkpoint_windows = checkpoint_windows

    @property
    def decoder_start_token_id(self) -> int:
        """The token that starts every target: the model's own choice (T5: pad, BART: </s>, Marian: pad)."""
        start = self.backbone.generation_config.decoder_start_token_id
        if start is None:
            start = getattr(self.hf_config, "decoder_start_token_id", None)
        if start is None:
            raise ConfigError(f"The {self.hf_config.model_type} model defines no decoder_start_token_id.")
        return int(start)

    @property
    def decoder_positions(self) -> int | None:
        """The most target tokens the decoder can take, the start token included (None: relative positions)."""
        return position_limit(self.hf_config)

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Any]:
        """What the backbone takes for the source: its ids, or with memory the encoder states read in windows."""
        if self.memory is None:
            return {"input_ids": input_ids}
        encoder = self.backbone.get_encoder()

        def encode(ids: Tensor, mask: Tensor) -> Tensor:
            return encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state

        states = encode_in_windows(
            encode,
            input_ids,
            attention_mask,
            self.memory,
            checkpoint=self.checkpoint_windows and self.training,
            max_positions=position_limit(self.hf_config),
            lockstep=in_lockstep(self),
        )
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V), in the compute dtype."""
        outputs = self.backbone(
            attention_mask=attention_mask.long(),
            decoder_input_ids=decoder_input_ids,
            **self.encoder_inputs(input_ids, attention_mask),
        )
        return outputs.logits

    def training_flops(self, batch_size: int, source_length: int, target_length: int) -> int:
        """An estimate of one training step's floating-point operations for MFU: 6 per weight of every linear layer
        per token it sees (Kaplan et al. 2020), the encoder's over source tokens, the decoder's and the output
        projection's over target tokens. Attention score products are left out (small at these lengths)."""
        encoder, decoder = self.backbone.get_encoder(), self.backbone.get_decoder()
        output = self.backbone.get_output_embeddings().weight.numel()
        return (
            6
            * batch_size
            * (linear_weights(encoder) * source_length + (linear_weights(decoder) + output) * target_length)
        )

    def hf_generation_config(self, config: GenerationConfig, **model_settings: Any) -> transformers.GenerationConfig:
        """The shared settings plus the decoder start and, for multilingual decoders, the forced first token."""
        if self.forced_bos_token_id is not None:
            model_settings.setdefault("forced_bos_token_id", self.forced_bos_token_id)
        return super().hf_generation_config(
            config, decoder_start_token_id=self.decoder_start_token_id, **model_settings
        )

    def generate(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, generation_config: GenerationConfig | None = None
    ) -> Tensor:
        """Generated tokens (B, L) after the start token, EOS included, padded after EOS (as `WeaverModel`)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.hf_config.pad_token_id)
        config = generation_config or GenerationConfig()
        if self.memory is None:
            return self.seeded_generate(input_ids, attention_mask, config)[:, 1:]
        with torch.no_grad():  # as HF `generate` runs the encoder, and the native model's search does
            memory = self.encoder_inputs(input_ids, attention_mask)
        with beam_shared_memory(self.backbone) as cache:
            return self.seeded_generate(input_ids, attention_mask, config, **memory, **cache)[:, 1:]


def enable_activation_checkpointing(backbone: PreTrainedModel) -> None:
    """Recompute each layer in backward (non-reentrant), by the method's current name where `transformers` has it
    (`gradient_checkpointing_enable` warns that it is deprecated there)."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def linear_weights(module: nn.Module) -> int:
    return sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, nn.Linear))


def load_backbone(
    auto_class: type, name_or_path: str, trust_remote_code: bool, encoder_decoder: bool
) -> PreTrainedModel:
    """`auto_class.from_pretrained(name_or_path)`, after checking from its config that the model is of the kind
    the model config expects (`AutoModelForCausalLM` would take BART's decoder alone)."""
    config_name, kind = ("hf_seq2seq", "an encoder-decoder") if encoder_decoder else ("hf_causal_lm", "a decoder-only")

    def from_pretrained(path: str) -> PreTrainedModel:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            check_architecture(config, encoder_decoder, "model.name_or_path", name_or_path)
            return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ValueError as error:  # e.g. code that needs trust_remote_code, or an unknown architecture
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(
                f"model.name_or_path='{name_or_path}' is not usable as {kind} model (model={config_name}): {error}"
            ) from error

    return load_pretrained(from_pretrained, name_or_path, "model.name_or_path")


def check_architecture(config: transformers.PretrainedConfig, encoder_decoder: bool, key: str, value: object) -> None:
    """A decoder-only model given to `model=hf_seq2seq`, or an encoder-decoder given to `model=hf_causal_lm`."""
    if bool(getattr(config, "is_encoder_decoder", False)) == encoder_decoder:
        return
    kind, other = ("a decoder-only", "hf_causal_lm") if encoder_decoder else ("an encoder-decoder", "hf_seq2seq")
    raise ConfigError(f"{key}='{value}' is {kind} {config.model_type} model: use model={other} for it.")


def config_from(from_config: Mapping[str, Any] | str, trust_remote_code: bool) -> transformers.PretrainedConfig:
    """`model.from_config`: a folder holding a `config.json`, or the config's fields with its `model_type`."""
    if isinstance(from_config, str):
        if not (Path(from_config).expanduser() / "config.json").is_file():
            raise ConfigError(f"model.from_config='{from_config}' is not a folder with a config.json.")
        return AutoConfig.from_pretrained(str(Path(from_config).expanduser()), trust_remote_code=trust_remote_code)
    fields = dict(OmegaConf.to_container(from_config) if isinstance(from_config, DictConfig) else from_config)
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ConfigError("model.from_config needs a model_type (e.g. bart, t5, gpt2, llama) beside the sizes.")
    known = list(transformers.CONFIG_MAPPING.keys())
    if model_type not in known:
        close = difflib.get_close_matches(str(model_type), known, n=3)
        suggestion = f" (did you mean {' or '.join(close)}?)" if close else " (e.g. bart, t5, gpt2, llama)"
        raise ConfigError(f"model.from_config.model_type={model_type!r} is no transformers model type{suggestion}")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.from_config: {error}") from error


def random_backbone(
    auto_class: type, from_config: Mapping[str, Any] | str, tokenizer: PreTrainedTokenizerBase, trust_remote_code: bool
) -> PreTrainedModel:
    """A randomly initialised model of that config (`auto_class`: `AutoModelForSeq2SeqLM` or
    `AutoModelForCausalLM`), its vocabulary and special ids the tokenizer's. An encoder-decoder's decoder starts from
    BOS (PAD where there is none, as T5's), and no token is forced at either end of its outputs."""
    config = config_from(from_config, trust_remote_code)
    encoder_decoder = auto_class is AutoModelForSeq2SeqLM
    check_architecture(config, encoder_decoder, "model.from_config", config.model_type)
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if encoder_decoder:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
        config.decoder_start_token_id = start
        config.forced_bos_token_id = config.forced_eos_token_id = None
    return auto_class.from_config(config, trust_remote_code=trust_remote_code)


def check_one_source(name_or_path: str | None, from_config: Mapping[str, Any] | str | None) -> None:
    """Exactly one of a pretrained model and a config to start from at random, before anything is loaded."""
    if (name_or_path is None) == (from_config is None):
        raise ConfigError(
            "Set one of model.name_or_path (a pretrained model) and model.from_config (a config to train from "
            f"scratch), got name_or_path={name_or_path!r} and from_config={from_config!r}."
        )


def saved_backbone(auto_class: type, folder: str, trust_remote_code: bool) -> PreTrainedModel:
    """A backbone of the config files a checkpoint stores (`HFBackbone.config_files`, written to `folder`), its
    weights left for the checkpoint's to replace."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    backbone = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    backbone.generation_config = transformers.GenerationConfig.from_pretrained(folder)
    return backbone


def pretrained_or_random(
    auto_class: type,
    name_or_path: str | None,
    from_config: Mapping[str, Any] | str | None,
    tokenizer: PreTrainedTokenizerBase,
    trust_remote_code: bool,
    saved_config: str | None = None,
) -> tuple[PreTrainedModel, str]:
    """The pretrained model at `name_or_path` or a random one of `from_config` (`check_one_source` first), and the
    option it came from, for messages; with `saved_config` (a restored checkpoint's), a model of that config, for
    the checkpoint's weights, whatever `name_or_path` holds now."""
    if saved_config is not None:
        backbone = saved_backbone(auto_class, saved_config, trust_remote_code)
        return backbone, f"the checkpoint's {backbone.config.model_type} model"
    if name_or_path is None:
        return random_backbone(auto_class, from_config, tokenizer, trust_remote_code), "model.from_config"
    encoder_decoder = auto_class is AutoModelForSeq2SeqLM
    backbone = load_backbone(auto_class, name_or_path, trust_remote_code, encoder_decoder=encoder_decoder)
    return backbone, f"model.name_or_path='{name_or_path}'"


def fit_embeddings(backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the token embeddings only when the tokenizer grew (extra special tokens); T5 keeps spare rows."""
    embeddings = backbone.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        log.info("Resizing the token embeddings from %d to %d for the added tokens.", embeddings, len(tokenizer))
        backbone.resize_token_embeddings(len(tokenizer))


def position_limit(config: transformers.PretrainedConfig) -> int | None:
    """Learned absolute positions cap the length (BART, Marian, mBART); relative ones (T5) do not."""
    if getattr(config, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        return None
    return getattr(config, "max_position_embeddings", None)


def check_lengths(config: transformers.PretrainedConfig, model: str, lengths: dict[str, int | None]) -> None:
    """`model` names where the config came from, for the message."""
    limit = position_limit(config)
    for key, length in lengths.items():
        if limit is not None and length is not None and length > limit:
            raise ConfigError(
                f"data.{key}={length} exceeds the {limit} positions of {model} ({config.model_type}); "
                f"set data.{key}<={limit}."
            )


def token_id(tokenizer: PreTrainedTokenizerBase, token: str, key: str) -> int:
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or index == tokenizer.unk_token_id:
        raise ConfigError(f"{key}='{token}' is not a token of the tokenizer ({tokenizer.name_or_path}).")
    return int(index)


def build_pretrained_seq2seq(
    tokenizer: PreTrainedTokenizerBase,
    name_or_path: str | None = None,
    from_config: Mapping[str, Any] | str | None = None,
    trust_remote_code: bool = False,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    forced_bos_token: str | None = None,
    activation_checkpointing: bool = False,
    memory: Mapping[str, Any] | None = None,
    saved_config: str | None = None,
) -> PretrainedSeq2Seq:
    """Hydra builder (`_target_: weaver.models.build_pretrained_seq2seq`) for `model=hf_seq2seq`: a pretrained model
    from `name_or_path`, or a random one from `from_config` (`model=bart_small_scratch`) trained from scratch;
    ``memory`` (`memory=recall`) reads sources of any length in windows and recalls from them. `saved_config`:
    see `pretrained_or_random`."""
    check_one_source(name_or_path, from_config)
    backbone, model = pretrained_or_random(
        AutoModelForSeq2SeqLM, name_or_path, from_config, tokenizer, trust_remote_code, saved_config
    )
    memory_config = memory_from_settings(memory, tokenizer)
    lengths = {"max_target_length": max_target_length}
    if memory_config is None:  # with memory, windows keep within the positions
        lengths["max_source_length"] = max_source_length
    check_lengths(backbone.config, model, lengths)
    if memory_config is not None:
        enable_recall(backbone, memory_config, position_limit(backbone.config))
    fit_embeddings(backbone, tokenizer)
    forced_bos = token_id(tokenizer, forced_bos_token, "model.forced_bos_token") if forced_bos_token else None
    if activation_checkpointing:
        enable_activation_checkpointing(backbone)
    checkpoint_windows = activation_checkpointing and memory_config is not None
    if checkpoint_windows:  # whole windows are recomputed in backward: their layers need not be again inside them
        for module in backbone.get_encoder().modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False
    # `from_pretrained` returns eval mode; Lightning keeps each module's mode, so dropout would stay off in training.
    return PretrainedSeq2Seq(
        backbone.train(), forced_bos_token_id=forced_bos, memory=memory_config, checkpoint_windows=checkpoint_windows
    )
