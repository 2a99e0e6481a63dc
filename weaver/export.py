"""Export a training checkpoint to a self-contained folder that loads and generates without Hydra or the configs.

Native Weaver models: `config.json`, `model.safetensors`, `generation_config.json` and the tokenizer files, loaded
by `weaver.from_pretrained(folder)`. HuggingFace backbones: their own `save_pretrained` folder, loaded by
`AutoModelForSeq2SeqLM.from_pretrained(folder)` or, for decoder-only models, `AutoModelForCausalLM`. Adapters that
update weights (LoRA, AdaLoRA, IA3) are merged into them, or written alone (`adapter_only`) as a `peft` adapter
folder that names its base model; virtual tokens (prefix and prompt tuning) are always written alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
import transformers
from peft import PeftModel
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_FILE
from tokenizers import processors
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from weaver.checkpoints import checkpoint_weaver, restore_run
from weaver.data.tokenizer import save_tokenizer
from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.models import CausalLM, HFBackbone, WeaverModel, can_merge, merge_adapters, peft_model_of
from weaver.models.memory import MemoryConfig
from weaver.models.pretrained import position_limit
from weaver.models.weaver import CONFIG_FILE, GENERATION_CONFIG_FILE, MODEL_TYPE
from weaver.prompts import PromptTemplate

log = logging.getLogger(__name__)
ADAPTER_BASE_KEY = "base_model_name_or_path"  # where adapter_config.json names the model the adapters apply to
PROMPT_TEMPLATE_FILE = "prompt_template.txt"


WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_checkpoint(
    ckpt_path: str | Path, output_dir: str | Path, adapter_only: bool = False, weights_dtype: str | None = None
) -> Path:
    """Write the model of `ckpt_path`, its tokenizer and its decoding settings to `output_dir`; `weights_dtype`
    (float16, bfloat16) stores the weights at half the size, and loading casts them back to the model's dtype."""
    if weights_dtype is not None and weights_dtype not in WEIGHTS_DTYPES:
        raise ConfigError(f"weights_dtype={weights_dtype!r}: choose one of {', '.join(WEIGHTS_DTYPES)} (or null).")
    output = Path(output_dir).expanduser()
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(
            f"output_dir='{output_dir}' is not empty: export into a new or empty folder, so that no file of an "
            "earlier export is read as part of this one."
        )
    run = restore_run(ckpt_path)
    model, generation = run.task.model, exported_generation(run.task.generation)
    base = run.cfg.model.get("init_from") or run.cfg.model.get("name_or_path")
    if not adapter_only and peft_model_of(model) is not None and not can_merge(model):
        log.info("Virtual-token adapters cannot be merged into the weights: exporting the adapters alone.")
        adapter_only = True
    if adapter_only and weights_dtype is not None:
        raise ConfigError(
            f"weights_dtype={weights_dtype} halves merged weights; the adapters alone are written as trained (a small "
            "share of the model): drop weights_dtype, or export merged (adapter_only=false, where the adapters merge)."
        )
    if adapter_only:  # before the folder is made
        check_adapters_exportable(model, base)
        check_base_kept(model, base)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"output_dir='{output_dir}': cannot create it ({error.strerror}).") from error
    if adapter_only:
        save_adapters(model, output, base)
    else:
        model = merge_adapters(model)
        if weights_dtype is not None:
            model = model.to(WEIGHTS_DTYPES[weights_dtype])
        if isinstance(model, HFBackbone):
            model.backbone.save_pretrained(output)
            if weights_dtype is not None:
                load_in_float32(output)
        else:
            model.save_pretrained(output, generation)
    if isinstance(model, HFBackbone):
        model.hf_generation_config(generation).save_pretrained(output)
        if getattr(model, "memory", None) is not None:
            log.warning(memory_left_out(model.memory, run.tokenizer, output))
    elif adapter_only:
        (output / GENERATION_CONFIG_FILE).write_text(json.dumps(generation.to_dict(), indent=2) + "\n")
    if isinstance(model, CausalLM):
        positions = getattr(model.backbone.config, "max_position_embeddings", None)
        save_prompt_side(run.tokenizer, run.cfg.data.get("prompt_template"), positions, output)
    elif isinstance(model, HFBackbone):  # it warns of a longer source, where the model would fail deep inside
        save_tokenizer(limited_to(run.tokenizer, position_limit(model.backbone.config)), output)
    else:
        save_tokenizer(run.tokenizer, output)
    share_as_umask_allows(output)
    log.info("Exported %s to %s", ckpt_path, output)
    return output


def load_in_float32(output: Path) -> None:
    """An HF config records the stored weights' dtype, and `from_pretrained` would load them in it: as a native
    model's do, half-precision weights load back in float32 (their values exact), to be cast by whoever wants less."""
    config_file = output / CONFIG_FILE
    config = json.loads(config_file.read_text())
    config["dtype"] = "float32"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_prompt_side(
    tokenizer: PreTrainedTokenizerBase, template: str | None, positions: int | None, output: Path
) -> None:
    """A decoder-only model's tokenizer and the prompt template its sources were put in (`{source}` marks where), so
    that `tokenizer(template.replace("{source}", source))` gives the prompt the model was trained on: the tokenizer
    adds what starts a prompt and nothing after it, pads on the left as the prompts were (a batch padded on the right
    would generate after the padding), and knows the model's positions (it warns of a longer prompt, where the
    model would fail on an index deep inside)."""
    tokenizer = limited_to(tokenizer, positions)
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs = {**tokenizer.init_kwargs, "padding_side": "left"}  # what `save_pretrained` writes
    add_prompt_start_only(tokenizer)
    save_tokenizer(tokenizer, output)
    if template is not None:
        (output / PROMPT_TEMPLATE_FILE).write_text(template, encoding="utf-8")


def limited_to(tokenizer: PreTrainedTokenizerBase, positions: int | None) -> PreTrainedTokenizerBase:
    """A copy of `tokenizer` whose `model_max_length` is at most the model's `positions` (None: no limit)."""
    tokenizer = copy.deepcopy(tokenizer)
    if positions is not None and tokenizer.model_max_length > positions:
        tokenizer.model_max_length = positions
        tokenizer.init_kwargs = {**tokenizer.init_kwargs, "model_max_length": positions}  # what is saved
    return tokenizer


def memory_left_out(memory: MemoryConfig, tokenizer: PreTrainedTokenizerBase, output: Path) -> str:
    """What an HF backbone's export leaves out of its plain `save_pretrained` folder: the memory it read sources
    with, and the overrides that read them so again."""
    settings = [f"model.memory.{key}={getattr(memory, key)}" for key in ("window", "stride", "top_k")]
    for name in ("prefix_token", "segment_token"):
        token_id = getattr(memory, f"{name}_id")
        if token_id is not None:
            settings.append(f"model.memory.{name}='{tokenizer.convert_ids_to_tokens(token_id)}'")
    return (
        f"The model read sources in windows with recall; {output} holds the backbone alone, which reads at most its "
        f"positions in one pass. To read long sources as in training: model=hf_seq2seq model.name_or_path={output} "
        f"memory=recall {' '.join(settings)}"
    )


def add_prompt_start_only(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make a fast tokenizer put `PromptTemplate.start` before a text and nothing after it, where it puts other
    special tokens around it (one trained for an encoder-decoder's sources ends each with EOS)."""
    start = PromptTemplate.start(tokenizer)
    probe = "a"
    if tokenizer(probe)["input_ids"] == start + tokenizer(probe, add_special_tokens=False)["input_ids"]:
        return
    if not isinstance(tokenizer, PreTrainedTokenizerFast):  # a slow tokenizer's special tokens are its own code
        log.warning(
            "The exported %s tokenizer puts other special tokens around a text than a prompt starts with (%s): "
            "tokenize prompts with add_special_tokens=False after those ids.",
            type(tokenizer).__name__,
            start,
        )
        return
    single = f"{tokenizer.bos_token} $A" if start else "$A"
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B", special_tokens=[(tokenizer.bos_token, start[0])] if start else []
    )


def share_as_umask_allows(folder: Path) -> None:
    """Give the folder's files the permissions the user's umask gives new files: `safetensors` writes its files
    readable by their owner alone, so an exported model would be unreadable to the rest of a team."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~umask)


def check_adapters_exportable(model: nn.Module, base: str | None) -> None:
    if peft_model_of(model) is None:
        raise ConfigError("adapter_only=true, but the checkpoint has no adapters (it was trained with peft=none).")
    if not base and not can_merge(model):
        raise ConfigError(
            "This model was trained from scratch with virtual tokens (peft=prefix or peft=prompt), which cannot be "
            "merged into the weights, and has no pretrained base to apply them to: it cannot be exported."
        )
    if not base:
        raise ConfigError(
            "adapter_only=true needs a pretrained base to apply the adapters to; this model was trained from "
            "scratch, so export it whole (adapter_only=false)."
        )


def exported_generation(generation: GenerationConfig) -> GenerationConfig:
    """The run's decoding settings for the exported model's `generate`, which returns one output per source: minimum
    Bayes risk's choice among samples is the task's (it scores them against each other as text), so the exported
    model draws one sample."""
    if generation.mbr_num_samples:
        log.info(
            "generation.mbr_num_samples=%d: the exported model's generate draws one sample per source (minimum Bayes "
            "risk's choice among samples is made by predict.py and eval.py, from the checkpoint).",
            generation.mbr_num_samples,
        )
    return dataclasses.replace(generation, mbr_num_samples=0)


def save_adapters(model: nn.Module, output: Path, base: str) -> None:
    adapters = peft_model_of(model)
    adapters.peft_config["default"].base_model_name_or_path = base
    # HF: peft saves the embeddings too when they were resized for added tokens; native models never resize.
    adapters.save_pretrained(output, save_embedding_layers="auto" if isinstance(model, HFBackbone) else False)


def from_pretrained(folder: str | Path) -> nn.Module:
    """A model exported by `export_checkpoint`, in eval mode: a `WeaverModel`, a `transformers` model, or either
    with its `peft` adapters loaded onto the base model named in `adapter_config.json`."""
    folder = Path(folder).expanduser()
    adapter_config = folder / ADAPTER_CONFIG_FILE
    if adapter_config.is_file():
        base = adapters_base_model(adapter_base(folder))
        if (folder / GENERATION_CONFIG_FILE).is_file():  # the adapted model's decoding settings, not the base's
            base.generation_config = (
                generation_config_of(folder)
                if isinstance(base, WeaverModel)
                else transformers.GenerationConfig.from_pretrained(folder)
            )
        return PeftModel.from_pretrained(base, folder).eval()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"'{folder}' has no {CONFIG_FILE}: not an exported model folder.")
    if json.loads(config_path.read_text()).get("model_type") == MODEL_TYPE:
        return WeaverModel.from_pretrained(folder)
    encoder_decoder = AutoConfig.from_pretrained(folder).is_encoder_decoder
    return (AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM).from_pretrained(folder).eval()


def adapters_base_model(path: Path) -> nn.Module:
    """The model adapters were trained on, in eval mode, as the adapted run started from it (`model.init_from`):
    the one a training checkpoint holds, or an exported folder's, adapters exported alone merged into their base."""
    if path.is_file():
        return checkpoint_weaver(path, ADAPTER_BASE_KEY).eval()
    model = from_pretrained(path)
    return merge_adapters(model).eval() if isinstance(model, PeftModel) else model


def check_base_kept(model: nn.Module, base: str) -> None:
    """Adapters alone carry none of what a native run changed in the model it started from (a vocabulary grown for
    the data's markers, copy attention or memory turned on): refused where it changed any, so that the export does
    not load as another model."""
    if isinstance(model, HFBackbone):  # its base is the Hub model or folder, and peft saves grown embeddings
        return
    path = Path(base).expanduser()
    if not path.exists():
        raise ConfigError(
            f"adapter_only=true: the adapters' base model (model.init_from='{base}') is gone; restore it, or export "
            "merged (adapter_only=false)."
        )
    trained = peft_model_of(model).get_base_model().config.to_dict()
    started = adapters_base_model(path).config.to_dict()
    changed = [
        f"{key} {started[key]!r} -> {value!r}"
        for key, value in trained.items()
        if key not in ("dropout", "attention_dropout") and value != started[key]
    ]
    if changed:
        raise ConfigError(
            f"adapter_only=true: the run changed its base model (model.init_from='{base}': {'; '.join(changed)}), "
            "which the adapters alone do not carry: export merged (adapter_only=false)."
        )


def adapter_base(folder: Path) -> Path:
    """The base model an adapter folder names (an exported folder or a training checkpoint), which must still be
    where it was when the adapters were exported."""
    base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())[ADAPTER_BASE_KEY]
    if not Path(base).expanduser().exists():
        raise ConfigError(
            f"'{folder}' holds adapters whose base model ({ADAPTER_BASE_KEY} in {ADAPTER_CONFIG_FILE}) is not a "
            f"folder or checkpoint here: '{base}'. Restore it, or set {ADAPTER_BASE_KEY} to where the base model is "
            "now (a Hub model: load it with AutoModel*.from_pretrained and the adapters with peft's "
            "PeftModel.from_pretrained)."
        )
    return Path(base).expanduser()


def generation_config_of(folder: str | Path) -> GenerationConfig:
    """Weaver's decoding settings stored with an exported native model (or its adapters)."""
    return GenerationConfig.from_dict(json.loads((Path(folder) / GENERATION_CONFIG_FILE).read_text()))
