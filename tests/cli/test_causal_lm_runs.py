"""Decoder-only models in real runs of every task: train, validate, test, predict and export, on tiny random GPT-2 and
Llama folders and on a GPT-2 shape trained from scratch; and peft methods on them."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import SHORT_TRAINING, embedded_slice, tiny_run_config
from tests.helpers import best_checkpoint, run_cli_in_process
from tests.models.tiny_hf import save_tiny_model
from tests.tasks.test_dialogue_task import chitchat_slice  # noqa: F401 (a fixture)
from weaver.checkpoints import checkpoint_weaver, restore_run
from weaver.cli.train import train
from weaver.data.packing import PackedBatchSampler
from weaver.errors import ConfigError
from weaver.export import export_checkpoint, from_pretrained
from weaver.inference import Example, Predictor

CORPORA = {"translation": "ddtp_en_de", "summarization": "debian_summaries"}
MAIN_METRIC = {"translation": "bleu", "summarization": "rougeL", "dialogue": "f1"}
# Words of each task's prompt template, none of which its references use: they must never reach a prediction.
PROMPT_WORDS = {"translation": ["Translate", "German:"], "summarization": ["Summarize", "Summary:"], "dialogue": []}
# The tiny models have 128 positions: prompt and completion must fit them together.
LENGTHS = ["data.max_source_length=40", "data.max_target_length=24", "generation.max_new_tokens=8"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message.role }}|>{{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def data_overrides(task: str, tmp_path: Path, chitchat: Path) -> list[str]:
    if task == "dialogue":
        return [f"data.train_file={chitchat}", "data.validation_fraction=0.1", "data.test_fraction=0.1"]
    (tmp_path / "data").mkdir(exist_ok=True)
    sizes = {"train": 64, "validation": 16, "test": 16}
    return [f"data.data_dir={embedded_slice(tmp_path / 'data', CORPORA[task], sizes)}"]


def causal_run_config(folder: Path, task: str, tmp_path: Path, chitchat: Path, overrides: list[str] = ()) -> DictConfig:
    model = ["model=hf_causal_lm", f"model.name_or_path={folder}"]
    data = data_overrides(task, tmp_path, chitchat)
    return tiny_run_config([f"task={task}", *data, *SHORT_TRAINING, *LENGTHS, *overrides], tmp_path, model=model)


def predictions(cfg: DictConfig) -> list[dict]:
    lines = (Path(cfg.paths.output_dir) / "test_predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def model_inputs(predictor: Predictor, examples: list[Example]) -> dict[str, torch.Tensor]:
    """The padded ids and mask `Predictor` gives a model for ``examples``."""
    encoded = predictor.encode(examples)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def exported_prompts(folder: Path, sources: list[str]) -> dict[str, torch.Tensor]:
    """Prompts as the README says to make them from the exported folder alone: its template with each source in
    it, tokenized by its tokenizer."""
    template = (folder / "prompt_template.txt").read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer([template.replace("{source}", source) for source in sources], padding=True, return_tensors="pt")


def exported_tokens(folder: Path, predictor: Predictor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What `AutoModelForCausalLM` generates from the exported folder alone for `batch`, new tokens only, cut at
    stop strings as the task cuts them."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        sequences = model.generate(**batch, tokenizer=AutoTokenizer.from_pretrained(folder))
    return predictor.run.task.model.cut_at_stop(sequences[:, batch["input_ids"].size(1) :])


@pytest.mark.parametrize(
    ("family", "task", "chat"),
    [
        ("gpt2", "translation", False),
        ("llama", "summarization", False),
        ("gpt2", "dialogue", False),
        ("llama", "dialogue", True),
    ],
    ids=["gpt2-translation", "llama-summarization", "gpt2-dialogue", "llama-dialogue-chat-template"],
)
def test_a_decoder_only_model_trains_tests_predicts_and_exports(
    family: str,
    task: str,
    chat: bool,
    chitchat_slice: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    folder = save_tiny_model(family, tmp_path / family)
    if chat:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(folder)
    cfg = causal_run_config(folder, task, tmp_path, chitchat_slice)
    metrics, objects = train(cfg)
    assert {"val/loss", "val/ppl", "test/loss", f"test/{MAIN_METRIC[task]}"} <= set(metrics)
    rows = predictions(cfg)
    assert rows and not any(word in row["hypothesis"] for row in rows for word in PROMPT_WORDS[task])

    folder.rename(tmp_path / "moved")  # the checkpoint alone rebuilds its model: predict, chat and export need no more
    run = restore_run(best_checkpoint(cfg))
    predictor = Predictor(run, batch_size=4)
    examples = [Example(source=row["source"]) for row in rows[:6]]
    if task == "dialogue":
        pairs = objects["datamodule"].pairs()["test"].select(range(6))
        examples = [Example(row["source"], context=row["context"]) for row in pairs]
        if chat:  # the prompt is the chat template's rendering of the turns
            assert run.tokenizer.decode(predictor.encode(examples[:1])["input_ids"][0]).endswith("<|assistant|>")
        chat_session = run_cli_in_process(
            f"ckpt_path={best_checkpoint(cfg)}",
            "interactive=true",
            cwd=tmp_path,
            script="predict.py",
            stdin_text="hello there\nhow are you?\n/quit\n",
        )
        assert chat_session.returncode == 0, chat_session.stderr[-3000:]
        assert sum(line.startswith("> ") for line in chat_session.stdout.splitlines()) == 2  # a reply to each turn
    else:  # predict renders the prompt as training did: the same hypotheses as the test split's
        assert list(predictor.generate(examples)) == [row["hypothesis"] for row in rows[:6]]
        # eval.py's and predict.py's overrides give the run a new template under any of its names.
        for key in ("prompt_template", "model.prompt_template"):
            retemplated = Predictor(restore_run(best_checkpoint(cfg), {key: "Q: {source} A:"}))
            prompt = run.tokenizer.decode(retemplated.encode(examples[:1])["input_ids"][0], skip_special_tokens=True)
            assert prompt.strip().startswith("Q:") and prompt.endswith(" A:")
    export_checkpoint(best_checkpoint(cfg), tmp_path / "exported")
    batch = model_inputs(predictor, examples)
    if not chat:  # the README's recipe prompts the exported model with the very ids predict.py gives a source that fits
        short = [" ".join((e.context[-1] if e.context else e.source).split()[:3]) for e in examples]  # dialogue: a turn
        fitting = [Example(text, context=[text]) for text in short]
        expected = model_inputs(predictor, fitting)["input_ids"]
        assert torch.equal(exported_prompts(tmp_path / "exported", [e.source for e in fitting])["input_ids"], expected)
    with torch.no_grad():
        expected = run.task.model.generate(**batch, generation_config=run.task.generation)
    assert torch.equal(exported_tokens(tmp_path / "exported", predictor, batch), expected)
    # Batches of prompts pad on the left, as in training; the template says how sources were prompted.
    assert AutoTokenizer.from_pretrained(tmp_path / "exported").padding_side == "left"
    assert (tmp_path / "exported" / "prompt_template.txt").read_text() == cfg.data.prompt_template


def test_gpt2_small_scratch_trains_on_the_task_tokenizer(
    tiny_data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shrink = ["n_embd=32", "n_layer=1", "n_head=2", "n_inner=64"]
    model = ["model=gpt2_small_scratch", "tokenizer.vocab_size=400", *[f"model.from_config.{s}" for s in shrink]]
    cfg = tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING], tmp_path, model=model)
    metrics, objects = train(cfg)
    assert {"val/loss", "test/bleu"} <= set(metrics)
    backbone = objects["model"].backbone
    assert backbone.config.model_type == "gpt2"
    assert backbone.get_input_embeddings().num_embeddings == len(objects["datamodule"].tokenizer) == 400
    export_checkpoint(best_checkpoint(cfg), tmp_path / "exported")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "exported").config.n_layer == 1
    # The task's tokenizer ends a source with EOS; the exported one starts a prompt as training did, and ends it bare.
    predictor = Predictor(restore_run(best_checkpoint(cfg)))
    sources = ["A library for Python", "Documentation files"]
    expected = model_inputs(predictor, [Example(source) for source in sources])["input_ids"]
    assert torch.equal(exported_prompts(tmp_path / "exported", sources)["input_ids"], expected)
    assert AutoTokenizer.from_pretrained(tmp_path / "exported").model_max_length == 512  # the model's positions
    # The hints of a decoder-only checkpoint point to what a decoder-only model can take.
    with pytest.raises(ConfigError, match=r"with its own model config \(model=hf_causal_lm model.name_or_path"):
        checkpoint_weaver(best_checkpoint(cfg))
    with caplog.at_level(logging.WARNING):
        list(Predictor(restore_run(best_checkpoint(cfg))).generate([Example(" ".join(["word"] * 400), id=0)]))
    assert "larger data.max_source_length." in caplog.text and "memory=recall" not in caplog.text


def train_metric(cfg: DictConfig, name: str) -> list[float]:
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        return [float(row[name]) for row in csv.DictReader(file) if row.get(name)]


def test_adalora_allocates_ranks_over_the_real_steps_and_exports_merged(
    tiny_data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    schedule = ["peft=adalora", "peft.tinit=1", "peft.tfinal=2"]
    cfg = causal_run_config(folder, "translation", tmp_path, tiny_data_dir, schedule)
    with caplog.at_level("INFO"):
        _, objects = train(cfg)
    ranks = train_metric(cfg, "train/adalora_rank")
    assert len(ranks) == 6 and ranks[-1] < ranks[0]  # from init_r to target_r on average, over the 6 steps
    assert len(train_metric(cfg, "train/adalora_orth_penalty")) == 6  # the regulariser trained with the loss
    assert objects["model"].backbone.peft_config["default"].total_step == 6
    assert "AdaLoRA at step" in caplog.text
    export_checkpoint(best_checkpoint(cfg), tmp_path / "exported")
    assert not (tmp_path / "exported" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "exported")


def test_prefix_tuning_exports_its_adapters_which_reload_onto_the_base(tiny_data_dir: Path, tmp_path: Path) -> None:
    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    cfg = causal_run_config(folder, "translation", tmp_path, tiny_data_dir, ["peft=prefix"])
    train(cfg)
    export_checkpoint(best_checkpoint(cfg), tmp_path / "adapter")  # cannot merge: adapters alone
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded = from_pretrained(tmp_path / "adapter")
    run = restore_run(best_checkpoint(cfg))
    predictor = Predictor(run)
    batch = model_inputs(predictor, [Example(source="A library for Python"), Example(source="Documentation files")])
    with torch.no_grad():
        expected = run.task.model.generate(**batch, generation_config=run.task.generation)
        sequences = reloaded.generate(**batch, tokenizer=run.tokenizer)
    assert torch.equal(run.task.model.cut_at_stop(sequences[:, batch["input_ids"].size(1) :]), expected)


def test_packed_training_runs_and_logs_its_padding_efficiency(tiny_data_dir: Path, tmp_path: Path) -> None:
    packing = ["data.packing=true", "data.max_tokens=512", "data.packing_row_length=128"]
    llama = save_tiny_model("llama", tmp_path / "llama")
    metrics, objects = train(causal_run_config(llama, "translation", tmp_path, tiny_data_dir, packing))
    rows = objects["datamodule"].train_dataloader().batch_sampler
    assert isinstance(rows, PackedBatchSampler) and (rows.row_length, rows.rows_per_batch) == (128, 4)
    assert {"val/loss", "test/bleu"} <= set(metrics)
    assert min(train_metric(objects["cfg"], "perf/padding_efficiency")) > 0.9


def test_packing_refuses_virtual_tokens(tiny_data_dir: Path, tmp_path: Path) -> None:
    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    overrides = ["peft=prompt", "data.packing=true", "data.max_tokens=512"]
    with pytest.raises(ConfigError, match="data.packing=true cannot go with peft=prompt: its virtual tokens"):
        train(causal_run_config(folder, "translation", tmp_path, tiny_data_dir, overrides))
