"""The pretrained Weaver shipped inside the package: it loads, generates and is every task's default start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import weaver
from tests.conftest import SHORT_TRAINING, compose_config, tiny_run_config
from weaver.cli.train import train
from weaver.config import pretrained_path
from weaver.errors import WeaverError
from weaver.models import WeaverModel

NAME = "weaver_small_pretrained"


def test_the_shipped_model_loads_by_name_and_fills_a_masked_span() -> None:
    folder = Path(pretrained_path(NAME))
    assert (folder / "model.safetensors").stat().st_size < 30e6
    model = weaver.from_pretrained(NAME)
    assert isinstance(model, WeaverModel) and not model.training
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert {"<mask>", "<speaker1>", "<speaker2>", "<sep>"} <= set(tokenizer.all_special_tokens)
    text = "This package provides the <mask> library for Python 3."
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=24, num_beams=1)
    restored = tokenizer.decode(output[0], skip_special_tokens=True)
    assert "Python" in restored and "<mask>" not in restored  # it reconstructs the text around the gap


def test_an_unknown_shipped_name_lists_the_shipped_ones() -> None:
    with pytest.raises(WeaverError, match=f"No model named 'weaver_huge' ships.*{NAME}"):
        pretrained_path("weaver_huge")


@pytest.mark.parametrize("task", ["translation", "summarization", "dialogue"])
def test_every_task_starts_from_it_and_from_scratch_is_one_override_away(task: str) -> None:
    cfg = compose_config([f"task={task}"])
    assert cfg.model.init_from == pretrained_path(NAME)
    assert cfg.tokenizer.name_or_path == cfg.model.init_from
    scratch = compose_config([f"task={task}", "model=weaver_small"])
    assert scratch.model._target_ == "weaver.models.build_weaver"
    assert scratch.tokenizer._target_ == "weaver.data.TrainedTokenizer"


def test_the_default_run_fine_tunes_it_with_its_tokenizer(tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING], tmp_path, model=[])
    shipped = AutoTokenizer.from_pretrained(pretrained_path(NAME))
    metrics, objects = train(cfg)
    assert objects["datamodule"].tokenizer.get_vocab() == shipped.get_vocab()
    assert objects["task"].model.config.dropout == 0.1  # pretrained without dropout, fine-tuned with it
    assert "test/bleu" in metrics


def test_copy_attention_joins_the_shipped_model_with_every_saved_weight_kept() -> None:
    from weaver.models.weaver import load_weaver

    saved = weaver.from_pretrained(NAME).state_dict()
    model = load_weaver(pretrained_path(NAME), copy_attention=True)
    assert model.config.copy_attention and model.copy is not None
    state = model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in saved.items())
    assert set(state) - set(saved)  # the copy module's own, freshly initialised
