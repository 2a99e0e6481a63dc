"""`python explain.py` and `predict.py explain=true` on a tiny trained checkpoint: the files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from tests.helpers import run_cli
from weaver.cli.explain import explain
from weaver.cli.predict import predict
from weaver.config import config_dir, register_resolvers
from weaver.errors import ConfigError


def tool_config(name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """`conf/<name>.yaml` composed with ``overrides``, writing under ``tmp_path``."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def test_explain_writes_a_heatmap_a_page_and_the_scores(translation_checkpoint: Path, tmp_path: Path) -> None:
    cfg = tool_config("explain", [f"ckpt_path={translation_checkpoint}", "input=A library for Python"], tmp_path)
    written = explain(cfg, {})
    assert [path.name for path in written] == ["example_000.png", "example_000.html", "example_000.json"]
    image = matplotlib.image.imread(written[0])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    scores = json.loads(written[2].read_text())
    assert scores["method"] == "cross_attention" and scores["source"] == "A library for Python"
    rows, columns = scores["relevance"]["shape"]
    assert (rows, columns) == (len(scores["output_tokens"]), len(scores["source_tokens"]))
    assert all(sum(row) == pytest.approx(1.0, abs=1e-4) for row in scores["relevance"]["values"])  # softmax rows
    page = written[1].read_text()
    assert "<script" in page and "http" not in page.replace("http-equiv", "")  # nothing fetched from a network
    data = json.loads(page.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    assert data["source"] == scores["source_tokens"] and data["output"] == scores["output_tokens"]


def test_gradient_attribution_and_its_refusals(translation_checkpoint: Path, tmp_path: Path) -> None:
    base = [f"ckpt_path={translation_checkpoint}", "input=A library for Python"]
    cfg = tool_config("explain", [*base, "method=integrated_gradients", "integration_steps=4"], tmp_path)
    scores = json.loads(explain(cfg, {})[2].read_text())
    assert scores["method"] == "integrated_gradients" and scores["layers"] is None
    too_long = tool_config("explain", [*base, "method=input_x_gradient", "max_gradient_source_tokens=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"longer than max_gradient_source_tokens=3"):
        explain(too_long, {})
    with pytest.raises(ConfigError, match=r"^layers=\[0, 7\]: the model has 2 decoder layers \(0 to 1\)\.$"):
        explain(tool_config("explain", [*base, "layers=[0,7]"], tmp_path), {})
    with pytest.raises(ConfigError, match=r"^heads=5: the model has 2 cross-attention heads"):
        explain(tool_config("explain", [*base, "heads=5"], tmp_path), {})
    with pytest.raises(ConfigError, match=r"^layers=1.5: the model has 2 decoder layers \(0 to 1\)\.$"):
        explain(tool_config("explain", [*base, "layers=1.5"], tmp_path), {})
    for key in ("layers", "heads"):
        with pytest.raises(ConfigError, match=rf"^{key}=\[\]: choose at least one of the model's 2 "):
            explain(tool_config("explain", [*base, f"{key}=[]"], tmp_path), {})
    with pytest.raises(ConfigError, match=r"^method=recall needs a model with memory"):
        explain(tool_config("explain", [*base, "method=recall"], tmp_path), {})


def test_predict_explain_adds_the_top_source_spans(translation_checkpoint: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("A library for Python\nTools to read PNG images\n", encoding="utf-8")
    overrides = [f"ckpt_path={translation_checkpoint}", f"input_file={inputs}", "explain=true"]
    predict(tool_config("predict", overrides, tmp_path), {})
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert 1 <= len(row["spans"]) <= 3
        # Whole words of the source (no special tokens), with where they sit among its tokens.
        assert all(f" {span['text']} " in f" {row['source']} " for span in row["spans"])
        assert all(0 <= span["start"] < span["end"] for span in row["spans"])
        assert [span["score"] for span in row["spans"]] == sorted((s["score"] for s in row["spans"]), reverse=True)


def test_bad_keys_are_named_on_one_line(tmp_path: Path) -> None:
    result = run_cli("input=hi", cwd=tmp_path, script="explain.py")
    assert result.returncode == 1 and "Error: ckpt_path is required: add ckpt_path=" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match=r"^method='saliency' is not one of cross_attention, recall"):
        explain(tool_config("explain", ["ckpt_path=x.ckpt", "input=hi", "method=saliency"], tmp_path), {})
