"""Pretrained backbones and LoRA in real training runs, and `python export.py`: an exported folder reloads in a fresh
process, without Hydra or the configs, and generates exactly the tokens of the checkpoint it came from."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from safetensors import safe_open
from transformers import AutoModelForSeq2SeqLM

from tests.conftest import SHORT_TRAINING, embedded_slice, tiny_run_config
from tests.helpers import best_checkpoint, run_cli_in_process
from tests.models.tiny_hf import save_tiny_model
from weaver.checkpoints import restore_run
from weaver.cli.train import train
from weaver.data import PretrainedTokenizer
from weaver.errors import ConfigError
from weaver.export import export_checkpoint, exported_generation, from_pretrained
from weaver.generation import GenerationConfig
from weaver.models import LoRA, PretrainedSeq2Seq, build_pretrained_seq2seq, build_weaver, load_weaver

TEXTS = ["The package provides a command line tool.", "Documentation files", "A library for Python 3"]

# Runs in a fresh interpreter: only `weaver.from_pretrained` / `transformers` and the exported folder.
RELOAD_AND_GENERATE = """
import json, sys
import weaver
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
folder, kind, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval() if kind == "hf" else weaver.from_pretrained(folder)
batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")  # as the README loads them
if kind == "hf":
    tokens = model.generate(**batch)[:, 1:]
else:
    tokens = model.generate(batch["input_ids"], batch["attention_mask"])
print(json.dumps(tokens.tolist()))
"""


def hf_run_config(folder: Path, data_dir: Path, tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    model = ["model=hf_seq2seq", f"model.name_or_path={folder}"]
    return tiny_run_config([f"data.data_dir={data_dir}", *SHORT_TRAINING, *overrides], tmp_path, model=model)


def checkpoint_tokens(ckpt: Path) -> list[list[int]]:
    """What the checkpoint's model generates for TEXTS with the run's own decoding settings."""
    run = restore_run(ckpt)
    batch = run.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = run.task.model.generate(batch["input_ids"], batch["attention_mask"].bool(), run.task.generation)
    return tokens.tolist()


def fresh_process_tokens(folder: Path, kind: str) -> list[list[int]]:
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_AND_GENERATE, str(folder), kind, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "You are using a model of type" not in result.stderr  # transformers knows the exported model's type
    return json.loads(result.stdout.strip().splitlines()[-1])


def export_cli(ckpt: Path, output: Path, tmp_path: Path, *extra: str) -> None:
    result = run_cli_in_process(f"ckpt_path={ckpt}", f"output_dir={output}", *extra, cwd=tmp_path, script="export.py")
    assert result.returncode == 0, result.stderr[-3000:]


def train_losses(cfg: DictConfig) -> list[float]:
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        return [float(row["train/loss"]) for row in csv.DictReader(file) if row.get("train/loss")]


@pytest.mark.slow
def test_native_export_generates_the_checkpoint_tokens_in_a_fresh_process(
    train_config: DictConfig, tmp_path: Path
) -> None:
    train(train_config)
    ckpt, output = best_checkpoint(train_config), tmp_path / "exported"
    export_cli(ckpt, output, tmp_path)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in output.iterdir()
    }
    umask = os.umask(0)
    os.umask(umask)
    assert {path.stat().st_mode & 0o777 for path in output.iterdir()} == {0o666 & ~umask}  # readable as usual
    assert fresh_process_tokens(output, "weaver") == checkpoint_tokens(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["t5", "bart", "marian"])
def test_hf_export_loads_with_auto_classes_and_generates_the_checkpoint_tokens(
    family: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    folder = save_tiny_model(family, tmp_path / family)
    cfg = hf_run_config(folder, tiny_data_dir, tmp_path, ["generation=beam4", "generation.max_new_tokens=8"])
    train(cfg)
    ckpt, output = best_checkpoint(cfg), tmp_path / "exported"
    trained = checkpoint_tokens(ckpt)
    folder.rename(tmp_path / "moved")  # the checkpoint alone rebuilds its model, as a Hub model offline
    assert checkpoint_tokens(ckpt) == trained
    export_cli(ckpt, output, tmp_path)
    assert fresh_process_tokens(output, "hf") == trained


def test_bart_small_scratch_trains_on_the_task_tokenizer_and_exports(tiny_data_dir: Path, tmp_path: Path) -> None:
    shrink = ["d_model=32", "encoder_layers=1", "decoder_layers=1", "encoder_ffn_dim=64", "decoder_ffn_dim=64"]
    model = ["model=bart_small_scratch", "tokenizer.vocab_size=400", *[f"model.from_config.{s}" for s in shrink]]
    cfg = tiny_run_config(
        [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, "generation.max_new_tokens=8"], tmp_path, model=model
    )
    metrics, objects = train(cfg)
    assert {"val/loss", "test/bleu"} <= set(metrics)
    backbone, tokenizer = objects["model"].backbone, objects["datamodule"].tokenizer
    assert backbone.config.model_type == "bart" and backbone.config.d_model == 32
    assert backbone.get_input_embeddings().num_embeddings == len(tokenizer) == 400  # the task's own BPE
    assert backbone.config.decoder_start_token_id == tokenizer.bos_token_id
    ckpt, output = best_checkpoint(cfg), tmp_path / "exported"
    export_cli(ckpt, output, tmp_path)
    assert fresh_process_tokens(output, "hf") == checkpoint_tokens(ckpt)
    # Half-size weights load back in float32, with the float16 values, as a native model's do.
    half = export_checkpoint(ckpt, tmp_path / "half", weights_dtype="float16")
    with safe_open(half / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}  # noqa: SIM118
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(half)
    trained = AutoModelForSeq2SeqLM.from_pretrained(output)
    assert {parameter.dtype for parameter in reloaded.parameters()} == {torch.float32}
    for (name, value), (_, expected) in zip(reloaded.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(value, expected.half().float()), name


def test_a_seq2seq_model_needs_one_of_a_name_or_a_config() -> None:
    from weaver.errors import ConfigError

    with pytest.raises(ConfigError, match="Set one of model.name_or_path .* and model.from_config"):
        build_pretrained_seq2seq(None, name_or_path=None, from_config=None)
    with pytest.raises(ConfigError, match="model.from_config='gpt2' is a decoder-only gpt2 model: use model=hf_causal"):
        build_pretrained_seq2seq(None, from_config={"model_type": "gpt2", "n_layer": 1})


def test_lora_trains_a_tenth_of_the_parameters_or_less(tmp_path: Path) -> None:
    folder = save_tiny_model("t5", tmp_path / "t5")
    tokenizer = PretrainedTokenizer(str(folder)).load()
    models = {
        "hf": build_pretrained_seq2seq(tokenizer, str(folder)),
        "native": build_weaver(vocab_size=400, d_model=64, num_heads=2, num_encoder_layers=2, num_decoder_layers=2),
    }
    for name, model in models.items():
        total = sum(p.numel() for p in model.parameters())
        adapted = LoRA(r=8)(model)
        trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        assert 0 < trainable * 10 <= total, name
    assert isinstance(models["hf"], PretrainedSeq2Seq)  # keeps its class: the backbone is wrapped


@pytest.mark.slow
def test_lora_training_lowers_the_loss_and_the_adapter_reloads(tiny_data_dir: Path, tmp_path: Path) -> None:
    folder = save_tiny_model("t5", tmp_path / "t5")
    overfit = ["peft=lora", "+trainer.overfit_batches=1", "trainer.max_steps=40", "trainer.val_check_interval=40"]
    cfg = hf_run_config(folder, tiny_data_dir, tmp_path, [*overfit, "optimizer.lr=1e-2", "~callbacks.early_stopping"])
    train(cfg)
    losses = train_losses(cfg)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5  # only the adapters learn: 6.4 -> 5.2 here
    ckpt, output = best_checkpoint(cfg), tmp_path / "adapter"
    export_checkpoint(ckpt, output, adapter_only=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in output.iterdir()}
    reloaded = from_pretrained(output)
    batch = PretrainedTokenizer(str(output)).load()(TEXTS, padding=True, return_tensors="pt")
    tokens = reloaded.generate(**batch)[:, 1:].tolist()
    assert tokens == checkpoint_tokens(ckpt)


@pytest.mark.slow
def test_native_lora_adapts_a_checkpoint_and_its_exported_adapters_reload_and_start_a_run(
    train_config: DictConfig, tiny_data_dir: Path, tmp_path: Path
) -> None:
    train(train_config)
    base = best_checkpoint(train_config)
    overrides = [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, "peft=lora"]
    cfg = tiny_run_config(overrides, tmp_path / "adapted", model=["model=weaver_pretrained", f"model.init_from={base}"])
    metrics, objects = train(cfg)
    trainable = sum(p.numel() for p in objects["model"].parameters() if p.requires_grad)
    assert trainable * 10 <= sum(p.numel() for p in objects["model"].parameters())
    ckpt, output = best_checkpoint(cfg), tmp_path / "adapter"
    with pytest.raises(ConfigError, match=r"^weights_dtype=float16 halves merged weights; the adapters alone are"):
        export_checkpoint(ckpt, output, adapter_only=True, weights_dtype="float16")
    assert not output.exists()  # refused before the folder is made
    export_checkpoint(ckpt, output, adapter_only=True)
    batch, tokens = (
        PretrainedTokenizer(str(output)).load()(TEXTS, padding=True, return_tensors="pt"),
        checkpoint_tokens(ckpt),
    )
    reloaded = from_pretrained(output)  # onto the model the base checkpoint holds
    assert reloaded.generate(batch["input_ids"], batch["attention_mask"]).tolist() == tokens
    started = load_weaver(str(output)).eval()  # model.init_from=<the adapters>: their base with them merged in
    assert started.generate(batch["input_ids"], batch["attention_mask"]).tolist() == tokens

    # Adapters trained from those adapters export alone too, and load onto the base they were trained on.
    chained = tiny_run_config(
        overrides, tmp_path / "chained", model=["model=weaver_pretrained", f"model.init_from={output}"]
    )
    train(chained)
    chained_output = export_checkpoint(best_checkpoint(chained), tmp_path / "chained_adapter", adapter_only=True)
    chained_tokens = from_pretrained(chained_output).generate(batch["input_ids"], batch["attention_mask"]).tolist()
    assert chained_tokens == checkpoint_tokens(best_checkpoint(chained))

    # A run that turns on a module its base lacks exports merged only: the adapters alone would load without it.
    copying = tiny_run_config(
        [*overrides, "+model.copy_attention=true"],
        tmp_path / "copying",
        model=["model=weaver_pretrained", f"model.init_from={base}"],
    )
    train(copying)
    with pytest.raises(
        ConfigError,
        match=r"^adapter_only=true: the run changed its base model \(model.init_from='.*': copy_attention False -> Tr",
    ):
        export_checkpoint(best_checkpoint(copying), tmp_path / "copying_adapter", adapter_only=True)
    merged = from_pretrained(export_checkpoint(best_checkpoint(copying), tmp_path / "copying_merged"))
    assert merged.generate(batch["input_ids"], batch["attention_mask"]).tolist() == checkpoint_tokens(
        best_checkpoint(copying)
    )

    base.rename(tmp_path / "moved.ckpt")
    assert checkpoint_tokens(ckpt) == tokens  # the checkpoint alone rebuilds its model: init_from is not read


@pytest.mark.slow
def test_adapters_whose_base_model_has_moved_name_the_base_path(tiny_data_dir: Path, tmp_path: Path) -> None:
    folder = save_tiny_model("t5", tmp_path / "t5")
    steps = ["peft=lora", "trainer.max_steps=2", "trainer.val_check_interval=2", "test=false"]
    cfg = hf_run_config(folder, tiny_data_dir, tmp_path, steps)
    train(cfg)
    output = export_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", tmp_path / "adapter", True)
    folder.rename(tmp_path / "moved")
    with pytest.raises(ConfigError) as error:
        from_pretrained(output)
    assert str(error.value).startswith(
        f"'{output}' holds adapters whose base model (base_model_name_or_path in adapter_config.json) is not a "
        f"folder or checkpoint here: '{folder}'. Restore it, or set base_model_name_or_path to where the base model is"
    )


def test_an_exported_model_draws_one_sample_where_the_run_chose_among_several() -> None:
    run_settings = GenerationConfig(do_sample=True, top_p=0.9, seed=1234, mbr_num_samples=8)
    exported = exported_generation(run_settings)
    assert exported.outputs_per_source == 1 and exported.do_sample and exported.top_p == 0.9 and exported.seed == 1234


def test_export_keeps_to_a_new_or_empty_folder(translation_checkpoint: Path, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "adapter_config.json").write_text("{}")  # an earlier export's file, which would be read as this one's
    with pytest.raises(ConfigError, match=r"output_dir='.*earlier' is not empty: export into a new or empty folder"):
        export_checkpoint(translation_checkpoint, earlier)
    with pytest.raises(ConfigError, match="adapter_only=true, but the checkpoint has no adapters"):
        export_checkpoint(translation_checkpoint, tmp_path / "adapters", adapter_only=True)
    assert not (tmp_path / "adapters").exists()  # refused before anything was written


def test_export_errors_name_the_problem(tmp_path: Path) -> None:
    result = run_cli_in_process(
        f"ckpt_path={tmp_path / 'missing.ckpt'}", f"output_dir={tmp_path}", cwd=tmp_path, script="export.py"
    )
    assert result.returncode == 1 and "missing.ckpt' is not a file" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli_in_process(f"ckpt_path={tmp_path / 'missing.ckpt'}", cwd=tmp_path, script="export.py")
    assert result.returncode == 1 and "Error: output_dir is required: add output_dir=..." in result.stderr
    assert "Traceback" not in result.stderr
    added = ["ckpt_path=x.ckpt", "output_dir=out", "++model.memory.top_k=4"]
    result = run_cli_in_process(*added, cwd=tmp_path, script="export.py")
    assert (
        result.returncode == 1
        and "export.py takes ckpt_path, output_dir, adapter_only, weights_dtype, not model" in (result.stderr)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "corpus", "model"),
    [
        ("translation", "ddtp_en_de", ["model=t5_small"]),  # the T5 config: its task prefix, on a local folder
        ("summarization", "debian_summaries", ["model=t5_small"]),
        ("summarization", "debian_summaries", ["model=hf_seq2seq", "data.max_source_length=128"]),  # 128 positions
        ("translation", "ddtp_en_de", ["model=hf_seq2seq"]),
    ],
    ids=["translation-t5", "summarization-t5", "summarization-bart", "translation-marian"],
)
def test_debug_run_on_a_local_backbone(task: str, corpus: str, model: list[str], tmp_path: Path, request) -> None:
    family = request.node.callspec.id.split("-")[1]
    folder = save_tiny_model(family, tmp_path / family)
    (tmp_path / "data").mkdir()
    data_dir = embedded_slice(tmp_path / "data", corpus, {"train": 64, "validation": 16, "test": 16})
    args = [f"task={task}", *model, f"model.name_or_path={folder}", "debug=fast", f"data.data_dir={data_dir}"]
    result = run_cli_in_process(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / task).glob("*/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert {"val/loss", "test/loss"} <= set(metrics)


@pytest.mark.slow
def test_training_with_adapters_resumes_from_its_checkpoint(tiny_data_dir: Path, tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")
    first = hf_run_config(folder, tiny_data_dir, tmp_path / "first", ["peft=lora"])
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = hf_run_config(
        folder, tiny_data_dir, tmp_path / "resumed", ["peft=lora", "trainer.max_steps=9", f"ckpt_path={last}"]
    )
    _, objects = train(resumed)
    assert objects["trainer"].global_step == 9
    frozen = [name for name, p in objects["model"].named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in name for name in frozen)


def test_an_hf_export_names_the_memory_it_leaves_out_and_its_tokenizer_knows_the_positions(
    tiny_data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")  # 128 positions
    memory = ["model.memory.window=64", "model.memory.stride=32", "model.memory.top_k=8"]
    cfg = hf_run_config(folder, tiny_data_dir, tmp_path, ["memory=recall", *memory, "data.max_source_length=256"])
    train(cfg)
    output = tmp_path / "exported"
    with caplog.at_level("WARNING"):
        export_checkpoint(best_checkpoint(cfg), output)
    assert f"model=hf_seq2seq model.name_or_path={output} memory=recall {' '.join(memory)}" in caplog.text
    exported = PretrainedTokenizer(str(output)).load()
    assert exported.model_max_length == 128
    # Read in windows again with the settings named, the export generates what the checkpoint does for a long source.
    source = " ".join(TEXTS * 20)
    batch = exported([source], return_tensors="pt", truncation=True, max_length=256)
    assert batch["input_ids"].size(1) > 128
    settings = {"window": 64, "stride": 32, "top_k": 8}
    reread = build_pretrained_seq2seq(exported, str(output), max_source_length=256, memory=settings).eval()
    run = restore_run(best_checkpoint(cfg))
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    with torch.no_grad():
        tokens = reread.generate(ids, mask, run.task.generation)
        assert tokens.tolist() == run.task.model.generate(ids, mask, run.task.generation).tolist()
