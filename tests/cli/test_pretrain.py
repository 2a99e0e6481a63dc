"""`task=pretrain` end to end: raw text in, a model scored by its held-out reconstruction loss out."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import weaver
from tests.conftest import SHORT_TRAINING, embedded_rows, tiny_run_config
from tests.helpers import best_checkpoint, run_cli_in_process
from weaver.checkpoints import checkpoint_tokenizer
from weaver.cli.train import train
from weaver.data import PretrainedTokenizer
from weaver.instantiate import build_model
from weaver.models import WeaverModel


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Paragraphs of the embedded descriptions as a plain text file."""
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text("\n\n".join(row["document"] for row in embedded_rows("debian_summaries", "train", 200)))
    return path


@pytest.mark.parametrize("objective", ["text_infilling", "span_corruption"])
def test_pretraining_on_a_text_file_reports_the_held_out_loss(objective: str, text_file: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(
        [
            "task=pretrain",
            f"denoising={objective}",
            "data.data_dir=null",
            f"data.train_file={text_file}",
            "data.pair_builder.text_fields=[text]",
            "data.pair_builder.max_words=40",
            "data.max_source_length=64",
            "data.max_target_length=64",
            *SHORT_TRAINING,
        ],
        tmp_path,
    )
    metrics, objects = train(cfg)
    assert {"val/loss", "val/ppl", "test/loss", "test/ppl"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(metrics[key])) for key in ("val/loss", "test/loss"))
    marker = "<mask>" if objective == "text_infilling" else "<extra_id_0>"
    assert marker in objects["datamodule"].tokenizer.all_special_tokens
    checkpoints = list((Path(cfg.paths.output_dir) / "checkpoints").glob("step*-val_loss*.ckpt"))
    assert checkpoints  # the best checkpoint is chosen by the lowest validation loss
    assert not (Path(cfg.paths.output_dir) / "test_predictions.jsonl").exists()  # nothing is generated


def test_a_decoder_only_model_pretrains_as_a_causal_lm_on_packed_texts(text_file: Path, tmp_path: Path) -> None:
    shrink = [f"model.from_config.{setting}" for setting in ("n_embd=32", "n_layer=1", "n_head=2", "n_inner=64")]
    cfg = tiny_run_config(
        [
            "task=pretrain",
            "denoising=none",
            "data.data_dir=null",
            f"data.train_file={text_file}",
            "data.pair_builder.text_fields=[text]",
            "data.pair_builder.max_words=40",
            "data.max_source_length=1",
            "data.max_target_length=64",
            *SHORT_TRAINING,
            "data.packing=true",
            "data.max_tokens=512",
            "data.packing_row_length=128",
        ],
        tmp_path,
        model=["model=gpt2_small_scratch", "tokenizer.vocab_size=400", *shrink],
    )
    metrics, objects = train(cfg)
    assert {"val/loss", "val/ppl", "test/loss", "test/ppl"} <= set(metrics)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    batches = objects["datamodule"].train_dataloader()
    assert any(int(batch["document_ids"].max()) > 0 for batch in batches)  # short texts share rows
    assert objects["model"].backbone.config.model_type == "gpt2"


@pytest.fixture(scope="module")
def pretraining_checkpoint(text_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a tiny text-infilling run without dropout."""
    pretrain = [
        "task=pretrain",
        "data.data_dir=null",
        f"data.train_file={text_file}",
        "data.pair_builder.text_fields=[text]",
        "model.dropout=0.0",
        *SHORT_TRAINING,
    ]
    cfg = tiny_run_config(pretrain, tmp_path_factory.mktemp("pretrain"))
    train(cfg)
    return Path(best_checkpoint(cfg))


def test_a_task_fine_tunes_from_a_pretraining_checkpoint_with_its_weights_and_tokenizer(
    pretraining_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    checkpoint = pretraining_checkpoint
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = tiny_run_config(
        [
            "model=weaver_pretrained",
            f"model.init_from={checkpoint}",
            "model.dropout=0.1",
            f"data.data_dir={tiny_data_dir}",
            *SHORT_TRAINING,
        ],
        tmp_path / "fine_tune",
        model=[],  # the pretrained model's size and tokenizer
    )
    tokenizer = PretrainedTokenizer(cfg.tokenizer.name_or_path).build(None, "", None)
    assert tokenizer.get_vocab() == checkpoint_tokenizer(checkpoint, "model.init_from").get_vocab()
    assert "<mask>" in tokenizer.all_special_tokens  # the pretraining run's, not a new one trained on the task
    model = build_model(cfg, tokenizer)
    weights = {key.removeprefix("model."): value for key, value in stored["state_dict"].items()}
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())
    # Pretrained without dropout, fine-tuned with it: the setting changes, no weight does.
    assert model.config.dropout == 0.1 and all(layer.dropout.p == 0.1 for layer in model.encoder_layers)
    metrics, _ = train(cfg)
    assert "test/bleu" in metrics


@pytest.mark.parametrize("tokenizer", ["tokenizer=bpe", "tokenizer.name_or_path=t5-small"])
def test_a_tokenizer_override_conflicting_with_the_pretrained_one_is_refused_before_reading_data(
    tokenizer: str, pretraining_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli_in_process(
        "model=weaver_pretrained",
        f"model.init_from={pretraining_checkpoint}",
        tokenizer,
        f"data.data_dir={tiny_data_dir}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"model.init_from='{pretraining_checkpoint}' brings its own tokenizer" in result.stderr
    assert "Traceback" not in result.stderr and "Training a bpe tokenizer" not in result.stderr + result.stdout


def test_an_export_in_half_precision_loads_back_as_the_same_model(pretraining_checkpoint: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from weaver.export import export_checkpoint

    full = WeaverModel.from_pretrained(export_checkpoint(pretraining_checkpoint, tmp_path / "full"))
    half_folder = export_checkpoint(pretraining_checkpoint, tmp_path / "half", weights_dtype="float16")
    with safe_open(str(half_folder / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}  # noqa: SIM118
    half = weaver.from_pretrained(str(half_folder))
    for (name, value), reference in zip(half.state_dict().items(), full.state_dict().values(), strict=True):
        assert value.dtype == torch.float32, name
        assert torch.equal(value, reference.half().float()), name


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/no/such/run.ckpt", "model.init_from='/no/such/run.ckpt' does not exist: give an exported folder or a"),
        ("{text}", "tokenizer.name_or_path='{text}' is not a readable checkpoint"),
    ],
)
def test_a_missing_or_foreign_pretrained_path_is_one_line_naming_the_key(
    path: str, message: str, text_file: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    path, message = path.format(text=text_file), message.format(text=text_file)
    result = run_cli_in_process(
        "model=weaver_pretrained", f"model.init_from={path}", f"data.data_dir={tiny_data_dir}", cwd=tmp_path
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_folder_holding_another_kind_of_model_is_one_line_naming_init_from(
    pretraining_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "t5_folder"
    checkpoint_tokenizer(pretraining_checkpoint, "model.init_from").save_pretrained(str(folder))
    (folder / "config.json").write_text('{"model_type": "t5"}')
    result = run_cli_in_process(
        "model=weaver_pretrained", f"model.init_from={folder}", f"data.data_dir={tiny_data_dir}", cwd=tmp_path
    )
    assert result.returncode != 0
    assert f"model.init_from='{folder}'" in result.stderr and "describes a 't5' model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_task_s_extra_special_tokens_grow_the_pretrained_vocabulary(
    pretraining_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_run_config(
        ["model=weaver_pretrained", f"model.init_from={pretraining_checkpoint}", f"data.data_dir={tiny_data_dir}"],
        tmp_path,
        model=[],
    )
    saved = build_model(cfg, PretrainedTokenizer(cfg.tokenizer.name_or_path).build(None, "", None)).embed.weight
    tokenizer = PretrainedTokenizer(cfg.tokenizer.name_or_path, extra_special_tokens=["<query>"]).build(None, "", None)
    model = build_model(cfg, tokenizer)
    assert model.config.vocab_size == len(tokenizer) == saved.shape[0] + 1
    assert torch.equal(model.embed.weight[:-1], saved)
    assert torch.allclose(model.embed.weight[-1], saved.mean(dim=0))  # the new token starts at the mean embedding
