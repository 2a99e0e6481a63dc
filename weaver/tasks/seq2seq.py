"""The LightningModule shared by every sequence-to-sequence task.

Training minimises label-smoothed cross-entropy. Validation and test compute the exact token-level loss over the
whole split and generate outputs that subclasses score over the whole corpus, after gathering from all ranks.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Container, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from weaver.data.collate import LABEL_PAD
from weaver.errors import ConfigError, call_naming_refusals
from weaver.explain import Explainer, figure_pixels, heatmap
from weaver.explain.attention import cross_attention_scores, read_source_states, reads_a_source, source_width
from weaver.generation import GenerationConfig
from weaver.generation.mbr import UTILITIES, mbr_select
from weaver.models.adapters import (
    allocate_ranks,
    load_rank_allocator_state,
    orthogonal_penalty,
    rank_allocator_state,
    schedule_ranks,
)
from weaver.tasks.loss import example_nll, relevance_loss, smoothed_cross_entropy
from weaver.tasks.samples import COLUMNS, image_loggers, log_heatmaps, log_samples, pick_samples
from weaver.utils.distributed import gather_objects
from weaver.utils.lockstep import in_lockstep

log = logging.getLogger(__name__)
EVAL_STAGES = ("val", "test")
# How torch's optimizers and schedulers turn down a config value (optimizer.lr=abc, optimizer.betas=[0.9]).
REFUSED_BY_TORCH = (TypeError, ValueError, LookupError)


def check_optimizer(factory: partial) -> None:
    """The optimizer's values, tried on a parameter of one number: torch checks them (`optimizer.lr=-1`) only when
    the optimizer is built, once the data, model and loggers are set up, some way into a run."""
    call_naming_refusals("optimizer", REFUSED_BY_TORCH, factory, params=[nn.Parameter(torch.zeros(1))])


def check_scheduler(node: Mapping[str, Any] | None) -> None:
    """The `scheduler` config's warm-up steps, refused below zero: transformers' schedules take them, starting a run
    part-way into their decay."""
    warmup = node.get("num_warmup_steps") if node else None
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ConfigError(f"scheduler.num_warmup_steps must be a whole number >= 0, got {warmup!r}")


def shift_right(labels: torch.Tensor, start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder sees the start token and then the target, one step behind."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == LABEL_PAD, pad_token_id)
    shifted[:, 0] = start_token_id
    return shifted


def checked_weight(key: str, weight: float, model: nn.Module) -> float:
    """A relevance loss's weight `task.<key>` as a float, or a one-line error naming the key."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ConfigError(f"task.{key} must be a number, got {weight!r}")
    if weight < 0:
        raise ConfigError(f"task.{key} must be >= 0, got {weight}")
    if weight and not reads_a_source(model):
        raise ConfigError(f"task.{key} needs an encoder-decoder model: it trains what the decoder reads of the source")
    return float(weight)


def checked_generation(generation: GenerationConfig | None, model: nn.Module) -> GenerationConfig:
    """The decoding settings, refused in one line where the model's decoder positions cannot hold them (else a
    search would stop only at the position past the last, some way into an evaluation)."""
    generation = generation or GenerationConfig()
    positions = getattr(model, "decoder_positions", None)
    if positions is not None and generation.max_new_tokens > positions:
        raise ConfigError(
            f"generation.max_new_tokens={generation.max_new_tokens} exceeds the model's {positions} decoder "
            f"positions; set generation.max_new_tokens<={positions}."
        )
    return generation


def checked_relevance_heads(relevance_heads: Sequence[int] | None, relevance_loss_weight: float) -> list[int] | None:
    """`task.relevance_heads` as the task uses it, or a one-line error naming the key."""
    if relevance_heads is None:
        return None
    relevance_heads = list(relevance_heads)
    if not relevance_heads or not all(type(head) is int and head >= 0 for head in relevance_heads):
        raise ConfigError(
            f"task.relevance_heads must be a non-empty list of head indices (>= 0), or null, got {relevance_heads!r}"
        )
    if len(set(relevance_heads)) < len(relevance_heads):
        raise ConfigError(f"task.relevance_heads names a head twice: {relevance_heads}")
    if not relevance_loss_weight:
        raise ConfigError(
            "task.relevance_heads chooses heads for the relevance loss: set task.relevance_loss_weight > 0"
        )
    return relevance_heads


class Seq2SeqTask(LightningModule):
    """Wraps a model that has `forward(input_ids, attention_mask, decoder_input_ids) -> logits`,
    `generate(input_ids, attention_mask, generation_config) -> token ids` (`generation_config.outputs_per_source`
    rows per source) and `decoder_start_token_id`."""

    # What `score` returns, each logged as val/<name> and test/<name> beside the loss and perplexity.
    metric_names: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        optimizer: partial,
        scheduler: partial | None = None,
        generation: GenerationConfig | None = None,
        label_smoothing: float = 0.1,
        max_generate_examples: int | None = 500,
        predictions_file: str | None = None,
        num_samples: int = 5,
        samples_dir: str | None = None,
        sample_heatmaps: bool = True,
        compile: bool = False,
        relevance_loss_weight: float = 0.0,
        relevance_heads: Sequence[int] | None = None,
        relevance_tagging_weight: float = 0.0,
    ) -> None:
        super().__init__()
        relevance_loss_weight = checked_weight("relevance_loss_weight", relevance_loss_weight, model)
        relevance_heads = checked_relevance_heads(relevance_heads, relevance_loss_weight)
        relevance_tagging_weight = checked_weight("relevance_tagging_weight", relevance_tagging_weight, model)
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.generation = checked_generation(generation, model)
        self.label_smoothing = label_smoothing
        self.max_generate_examples = max_generate_examples
        # The examples validation generates for (`validation_ids_to_generate`); every one where None.
        self.val_generation_ids: Container[int] | None = (
            None if max_generate_examples is None else range(max_generate_examples)
        )
        self.predictions_file = predictions_file
        self.num_samples, self.samples_dir = num_samples, samples_dir
        self.sample_heatmaps = sample_heatmaps
        self.compile_model = compile
        self.relevance_loss_weight = relevance_loss_weight
        self.relevance_heads = relevance_heads
        self.relevance_tagging_weight = relevance_tagging_weight
        # Scores each source state for relevance to the target: trained, never used to generate.
        self.relevance_probe = nn.Linear(source_width(model), 1) if relevance_tagging_weight else None
        self.metric_signatures: dict[str, str] = {}
        # Exact corpus loss: each example's summed NLL and target tokens by its id (a sampler may repeat batches to
        # keep ranks even: each example counts once), summed over ranks and divided once at the end.
        self.example_losses: dict[str, dict[int, tuple[float, int]]] = {stage: {} for stage in EVAL_STAGES}
        self.generated: dict[str, list[dict[str, Any]]] = {stage: [] for stage in EVAL_STAGES}
        self.ranked_step, self.total_rank = -1, None
        self.resumed_rng_states: dict[str, Any] | None = None
        self.restored_metrics: dict[str, float] = {}

    # ---- the model --------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """`task.compile=true`: the teacher-forced forward (training and evaluation loss) runs through
        `torch.compile`, with dynamic shapes for the varying batch sizes; generation stays eager.

        Deterministic algorithms go on first (warnings only), as `trainer.deterministic=warn` would turn them on:
        Inductor compiles the embedding's backward into a multi-threaded loop of atomic adds, whose order changes from
        run to run, and in deterministic mode into aten's ordered `index_put`, so that a seeded run repeats bit for
        bit as an eager one does. The setting holds for every graph compiled later (backward, recompiles); `train()`
        puts it back as it found it when the job ends."""
        if self.compile_model:
            if not torch.are_deterministic_algorithms_enabled():
                torch.use_deterministic_algorithms(True, warn_only=True)
            self.model.compile(dynamic=True)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        decoder_input_ids = shift_right(batch["labels"], self.model.decoder_start_token_id, self.tokenizer.pad_token_id)
        return self.model(batch["input_ids"], batch["attention_mask"], decoder_input_ids)

    def generate_texts(self, batch: dict[str, Any]) -> list[str]:
        """One output per source; with `generation.mbr_num_samples`, the minimum-Bayes-risk choice among as many
        samples of it."""
        samples = self.generation.outputs_per_source  # side by side, from one encoding of each source
        tokens = self.model.generate(batch["input_ids"], batch["attention_mask"], self.generation)
        texts = [text.strip() for text in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        if samples == 1:
            return texts
        scorer = UTILITIES[self.generation.mbr_metric]()
        return [mbr_select(texts[start : start + samples], scorer) for start in range(0, len(texts), samples)]

    # ---- training ---------------------------------------------------------------------------------------

    def training_logits(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) and labels (N,): of every label column, or of a packed batch's completion tokens alone
        (`data.packing`: rows of several examples, with their `document_ids`)."""
        if "document_ids" not in batch:
            return self(batch).flatten(0, 1), batch["labels"].flatten()
        scored = batch["labels"].ne(LABEL_PAD)
        logits = self.model.packed_logits(batch["input_ids"], batch["position_ids"], batch["document_ids"], scored)
        return logits, batch["labels"][scored]

    def relevance_supervised_logits(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[float, torch.Tensor]]]:
        """`training_logits` and, from the same forward, the relevance losses by name with their weights: where the
        source tokens each target comes from are marked by the pair builder (`relevance_mask`: the recall set's
        queried document), `task.relevance_loss_weight` trains the decoder's cross-attention towards them and
        `task.relevance_tagging_weight` the encoder to mark them in its states (a linear probe's scores, taken
        as one query's attention over the source), which recall's queries can then fetch by."""
        if "relevance_mask" not in batch:
            raise ConfigError(
                "task.relevance_loss_weight and task.relevance_tagging_weight need batches that mark each target's "
                "relevant source tokens: a pair builder that knows them (data=recall_set), or both at 0"
            )
        relevant, ignored = batch["relevance_mask"], batch.get("relevance_ignore_mask")
        with ExitStack() as hooks:
            if self.relevance_loss_weight:
                scores = hooks.enter_context(cross_attention_scores(self.model, batch["attention_mask"]))
            if self.relevance_tagging_weight:
                states = hooks.enter_context(read_source_states(self.model))
            logits, labels = self.training_logits(batch)
        losses = {}
        if self.relevance_loss_weight:
            if self.relevance_heads is not None and max(self.relevance_heads) >= scores[0].size(1):
                raise ConfigError(
                    f"task.relevance_heads={self.relevance_heads} names a head the model does not have: its "
                    f"cross-attention has {scores[0].size(1)} heads (0 to {scores[0].size(1) - 1})"
                )
            targets = batch["labels"].ne(LABEL_PAD)
            loss = relevance_loss(scores, relevant, targets, ignored, self.relevance_heads)
            losses["relevance_loss"] = (self.relevance_loss_weight, loss)
        if self.relevance_tagging_weight:
            # One query over the source: the probe's scores as attention, the same -log(mass on the relevant tokens).
            tags = self.relevance_probe(states[0]).float().squeeze(-1)
            tags = tags.masked_fill(~batch["attention_mask"].bool(), float("-inf"))[:, None, None, :]  # (B, 1, 1, S)
            one_query = relevant.new_ones(relevant.size(0), 1)
            losses["relevance_tagging_loss"] = (
                self.relevance_tagging_weight,
                relevance_loss([tags], relevant, one_query, ignored),
            )
        return logits, labels, losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = {}
        if self.relevance_loss_weight or self.relevance_tagging_weight:
            logits, labels, losses = self.relevance_supervised_logits(batch)
        else:
            logits, labels = self.training_logits(batch)
        loss = smoothed_cross_entropy(logits, labels, self.label_smoothing, LABEL_PAD)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        for name, (weight, term) in losses.items():
            self.log(f"train/{name}", term, batch_size=batch["input_ids"].size(0))
            loss = loss + weight * term
        penalty = orthogonal_penalty(self.model)  # peft=adalora's regulariser, trained with the loss
        if penalty is None:
            return loss
        self.log("train/adalora_orth_penalty", penalty, batch_size=batch["input_ids"].size(0))
        return loss + penalty

    def on_train_start(self) -> None:
        self.ranked_step = self.trainer.global_step  # the first micro-batch of a window is no optimizer step
        schedule_ranks(self.model, self.trainer.estimated_stepping_batches)

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        """AdaLoRA (`peft=adalora`) moves rank between its matrices after every optimizer step, while the step's
        gradients are still in place (the next step zeroes them)."""
        step = self.trainer.global_step
        if step == self.ranked_step:  # gradient accumulation: not an optimizer step
            return
        self.ranked_step = step
        total = allocate_ranks(self.model, step)
        if total is None:
            return
        self.log("train/adalora_rank", float(total), batch_size=batch["input_ids"].size(0))
        if total != self.total_rank:
            log.info("AdaLoRA at step %d: total rank %d over all adapted matrices.", step, total)
            self.total_rank = total

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Beside what Lightning saves: the random number generators (dropout) and AdaLoRA's rank allocator, so a
        resumed run takes the very steps an uninterrupted one would; and the run's metrics as last logged, which a
        run resumed after its last validation reports as an uninterrupted one does."""
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        checkpoint["logged_metrics"] = {name: float(value) for name, value in self.trainer.callback_metrics.items()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()
        allocator = rank_allocator_state(self.model)
        if allocator is not None:
            checkpoint["adalora_rank_allocator"] = allocator

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resumed_rng_states = checkpoint.get("rng_states")
        self.restored_metrics = checkpoint.get("logged_metrics", {})
        load_rank_allocator_state(self.model, checkpoint.get("adalora_rank_allocator"))

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The saved generators come back at the first step after a resume, not at loading: the resumed run's new
        data loaders draw from them, where an uninterrupted run went on with its loader."""
        if self.resumed_rng_states is None:
            return
        torch.set_rng_state(self.resumed_rng_states["torch"])
        if "cuda" in self.resumed_rng_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.resumed_rng_states["cuda"])
        self.resumed_rng_states = None

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [p for p in self.trainer.model.parameters() if p.requires_grad]
        optimizer = call_naming_refusals("optimizer", REFUSED_BY_TORCH, self.optimizer_factory, params=parameters)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        kwargs = {}
        if "num_training_steps" in inspect.signature(self.scheduler_factory.func).parameters:
            kwargs["num_training_steps"] = self.trainer.estimated_stepping_batches
        scheduler = call_naming_refusals("scheduler", REFUSED_BY_TORCH, self.scheduler_factory, optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Two cases Lightning does not clip: FSDP, whose sharded gradients only the root module can clip by norm,
        and fused optimizers, which unscale fp16 gradients inside their step: here a gradient scaler (fp16) unscales
        them first (its step then leaves them as they are), and without one (bf16, fp32) they are unscaled already,
        so clipping them directly is exact."""
        by_norm = gradient_clip_algorithm in (None, "norm")
        if gradient_clip_val and by_norm and isinstance(self.trainer.model, FullyShardedDataParallel):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        if gradient_clip_val and optimizer.defaults.get("fused"):
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if by_norm:
                torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---- evaluation -------------------------------------------------------------------------------------

    def evaluation_step(self, stage: str, batch: dict[str, Any]) -> None:
        self.update_loss(stage, batch)
        chosen = self.val_generation_ids if stage == "val" else None
        selected = [
            i for i, example_id in enumerate(batch["example_id"].tolist()) if chosen is None or example_id in chosen
        ]
        if not selected and in_lockstep(self.model):
            # The ranks of a sharded model generate together: this one generates for its first example, unkept.
            self.generate_texts({"input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1]})
        if not selected:
            return
        index = torch.tensor(selected, device=batch["input_ids"].device)
        subset = {"input_ids": batch["input_ids"][index], "attention_mask": batch["attention_mask"][index]}
        for i, hypothesis in zip(selected, self.generate_texts(subset), strict=True):
            record = {
                "id": int(batch["example_id"][i]),
                "source": batch["source"][i],
                "reference": batch["target"][i],
                "hypothesis": hypothesis,
            }
            if stage == "val" and self.sample_heatmaps:  # what a sample's heatmap is computed from
                record["input_ids"] = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
            self.generated[stage].append(record)

    def update_loss(self, stage: str, batch: dict[str, Any]) -> None:
        """A method of its own so the batch's logits are freed before its beam search, not held through it."""
        labels = batch["labels"]
        nll = example_nll(self(batch), labels, LABEL_PAD).tolist()
        tokens = labels.ne(LABEL_PAD).sum(1).tolist()
        self.example_losses[stage].update(zip(batch["example_id"].tolist(), zip(nll, tokens, strict=True), strict=True))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluation_step("test", batch)

    def collect_generated(self, stage: str) -> list[dict[str, Any]]:
        """Every rank's generations, once each: distributed samplers repeat examples to even out ranks."""
        unique = {record["id"]: record for record in gather_objects(self.generated[stage])}
        self.generated[stage] = []
        return [unique[key] for key in sorted(unique)]

    def corpus_loss(self, stage: str) -> float:
        """Every rank's examples' NLL over their target tokens, each example once; NaN without tokens, and kept
        NaN (not dropped) where an example's is, so a diverged model scores NaN instead of a perfect 0."""
        losses = dict(gather_objects(list(self.example_losses[stage].items())))
        self.example_losses[stage] = {}
        tokens = sum(count for _, count in losses.values())
        return math.fsum(nll for nll, _ in losses.values()) / tokens if tokens else math.nan

    def evaluation_epoch_end(self, stage: str) -> list[dict[str, Any]]:
        loss = torch.tensor(self.corpus_loss(stage), device=self.device)
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/ppl", torch.exp(loss.clamp(max=50)))
        records = self.collect_generated(stage)
        if not torch.isfinite(loss):
            # Text generated by weights that are not finite numbers is no output to score.
            for name in self.metric_names:
                self.log(f"{stage}/{name}", float("nan"))
        elif records:
            hypotheses = [r["hypothesis"] for r in records]
            scores = self.score(hypotheses, [r["reference"] for r in records], [r["source"] for r in records])
            for name, value in scores.items():
                self.log(f"{stage}/{name}", float(value), prog_bar=name == next(iter(scores)))
        return records

    def on_validation_epoch_start(self) -> None:
        self.val_generation_ids = self.validation_ids_to_generate()

    def validation_ids_to_generate(self) -> Container[int] | None:
        """The `max_generate_examples` lowest example ids among the examples this validation reads, the same at every
        validation: a validation cut short (`trainer.limit_val_batches`, the sanity check) of a length-sorted split
        would otherwise hold few of the split's lowest ids, or none, and score nothing."""
        limit, trainer = self.max_generate_examples, self.trainer
        lowest_ids_read = getattr(trainer.datamodule, "lowest_ids_read", None)  # a Seq2SeqDataModule's
        if limit is None or lowest_ids_read is None:
            return self.val_generation_ids
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return lowest_ids_read("validation", limit, batches[0] if batches else 0)

    def on_validation_epoch_end(self) -> None:
        records = self.evaluation_epoch_end("val")
        if records and self.samples_dir and self.num_samples > 0:
            step = self.trainer.global_step
            samples = pick_samples(records, self.num_samples, seed=step)
            heatmaps = self.heatmaps(samples)  # on every rank: a sharded model runs forward on all of them together
            if self.trainer.is_global_zero:
                log_samples(samples, Path(self.samples_dir), step, self.trainer.loggers)
                log_heatmaps(heatmaps, step, self.trainer.loggers)
        # A standalone `trainer.validate` (eval.py split=validation) keeps its predictions, as a test does; the
        # validations inside `fit` keep samples only.
        if self.trainer.state.fn == TrainerFn.VALIDATING:
            self.write_predictions(records, "validation")

    def heatmaps(self, samples: list[dict[str, Any]]) -> list[np.ndarray]:
        """Each sample's relevance heatmap (the attention the model applies) as an RGB image, for the image loggers
        (TensorBoard, W&B); none without one of them, with `sample_heatmaps=false`, for a decoder-only model, or
        under MBR decoding, whose choice among samples no single generation reproduces."""
        if not self.sample_heatmaps or (self.generation.mbr_num_samples or 1) > 1 or not reads_a_source(self.model):
            return []
        if not image_loggers(self.trainer.loggers):
            return []
        sources = [torch.tensor(sample["input_ids"]) for sample in samples]
        input_ids = pad_sequence(sources, batch_first=True, padding_value=self.tokenizer.pad_token_id).to(self.device)
        lengths = torch.tensor([len(source) for source in sources], device=self.device)
        batch = {
            "input_ids": input_ids,
            "attention_mask": torch.arange(input_ids.size(1), device=self.device) < lengths[:, None],
        }
        with self.trainer.precision_plugin.forward_context():
            explanations = Explainer(self.model, self.tokenizer, self.generation)(batch)
        return [figure_pixels(heatmap(explanation)) for explanation in explanations]

    def on_test_epoch_end(self) -> None:
        self.write_predictions(self.evaluation_epoch_end("test"), "test")
        for name, signature in self.metric_signatures.items():
            log.info("%s signature: %s", name, signature)

    def write_predictions(self, records: list[dict[str, Any]], split: str) -> None:
        if not self.predictions_file or not self.trainer.is_global_zero:
            return
        path = Path(self.predictions_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as file:
            for record in records:
                file.write(json.dumps({column: record[column] for column in COLUMNS}, ensure_ascii=False) + "\n")
        log.info("Wrote %d %s predictions to %s", len(records), split, path)

    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        """Corpus-level metrics of the task, named as `metric_names`; the first one is shown in the progress bar."""
        raise NotImplementedError

    def example_score(self, hypothesis: str, reference: str, source: str) -> float | None:
        """One example's score (a predictions file's `score`): the first metric on that example alone, where the
        task has one. A task whose corpus metric is not a mean over examples gives its sentence-level form."""
        return next(iter(self.score([hypothesis], [reference], [source]).values()), None)

    def logged_metrics(self, stage: str) -> list[str]:
        """Every metric an evaluation logs under ``stage`` ("val", "test"): what `monitor.metric` may name. A
        validation that generates nothing (`max_generate_examples=0`) scores its loss alone."""
        scored = () if stage == "val" and self.max_generate_examples == 0 else self.metric_names
        return [f"{stage}/{name}" for name in ("loss", "ppl", *scored)]
