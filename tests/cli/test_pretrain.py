"""`task=pretrain` end to end: raw text in, a model scored by its held-out reconstruction loss out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import SHORT_TRAINING, embedded_rows, tiny_run_config
from weaver.cli.train import train


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
