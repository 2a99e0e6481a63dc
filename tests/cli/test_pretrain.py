"""`task=pretrain` end to end: raw text in, a model scored by its held-out reconstruction loss out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import SHORT_TRAINING, embedded_rows, tiny_run_config
from tests.helpers import best_checkpoint, run_cli
from weaver.checkpoints import checkpoint_tokenizer
from weaver.cli.train import train
from weaver.data import PretrainedTokenizer
from weaver.instantiate import build_model


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


def test_a_task_fine_tunes_from_a_pretraining_checkpoint_with_its_weights_and_tokenizer(
    text_file: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    pretrain = [
        "task=pretrain",
        "data.data_dir=null",
        f"data.train_file={text_file}",
        "data.pair_builder.text_fields=[text]",
        *SHORT_TRAINING,
    ]
    pretrained_cfg = tiny_run_config(pretrain, tmp_path / "pretrain")
    train(pretrained_cfg)
    checkpoint = best_checkpoint(pretrained_cfg)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)

    cfg = tiny_run_config(
        ["model=weaver_pretrained", f"model.path={checkpoint}", f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING],
        tmp_path / "fine_tune",
        model=[],  # the pretrained model's size and tokenizer
    )
    tokenizer = PretrainedTokenizer(cfg.tokenizer.name_or_path).build(None, "", None)
    assert tokenizer.get_vocab() == checkpoint_tokenizer(checkpoint, "model.path").get_vocab()
    assert "<mask>" in tokenizer.all_special_tokens  # the pretraining run's, not a new one trained on the task
    model = build_model(cfg, tokenizer)
    weights = {key.removeprefix("model."): value for key, value in stored["state_dict"].items()}
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())
    metrics, _ = train(cfg)
    assert "test/bleu" in metrics


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/no/such/run.ckpt", "tokenizer.name_or_path='/no/such/run.ckpt' is not a folder"),
        ("{text}", "tokenizer.name_or_path='{text}' is not a readable checkpoint"),
    ],
)
def test_a_missing_or_foreign_pretrained_path_is_one_line_naming_the_key(
    path: str, message: str, text_file: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    path, message = path.format(text=text_file), message.format(text=text_file)
    result = run_cli("model=weaver_pretrained", f"model.path={path}", f"data.data_dir={tiny_data_dir}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
