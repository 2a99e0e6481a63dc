"""Long inputs end to end: the recall set trained with memory and recall, and a model trained on short sources
scored on long ones with recall switched on at evaluation only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.conftest import FIXTURE_SIZES, SHORT_TRAINING, embedded_rows, tiny_run_config, write_jsonl
from tests.helpers import best_checkpoint, run_cli_in_process
from tests.models.tiny_hf import fast_tokenizer, tiny_model
from weaver.cli.train import train
from weaver.errors import ConfigError
from weaver.models.causal_lm import CausalLM
from weaver.tasks.seq2seq import checked_weight

MEMORY = ["memory=recall", "model.memory.window=64", "model.memory.stride=32", "model.memory.top_k=8"]


@pytest.fixture(scope="module")
def recall_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The summaries fixture with a `name` per row: the recall set's keys."""
    folder = tmp_path_factory.mktemp("recall_set")
    for split, count in FIXTURE_SIZES.items():
        rows = embedded_rows("debian_summaries", split, count)
        write_jsonl(folder / f"{split}.jsonl", [{**row, "name": f"package-{row['id'][:6]}"} for row in rows])
    return folder


def recall_config(data_dir: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    recall_set = [
        "task=summarization",
        "data=recall_set",
        f"data.data_dir={data_dir}",
        "data.pair_builder.keys_file=null",
        "data.pair_builder.num_documents=3",
        "data.pair_builder.eval_num_documents=6",
        "data.pair_builder.eval_max_examples=8",
        "data.max_source_length=4096",
    ]
    return tiny_run_config([*recall_set, *SHORT_TRAINING, *overrides], tmp_path)


@pytest.mark.slow
def test_the_recall_set_trains_with_memory_and_scores_longer_sources(recall_data_dir: Path, tmp_path: Path) -> None:
    query_match = "model.query_match={query_token:'<query>',ngram:2}"  # restored by eval.py below with its vector
    cfg = recall_config(recall_data_dir, tmp_path, *MEMORY, "model.memory.prefix_token='<query>'", query_match)
    metrics, objects = train(cfg)
    query_id = objects["datamodule"].tokenizer.convert_tokens_to_ids("<query>")
    assert objects["model"].config.memory.prefix_token_id == query_id
    assert objects["model"].config.query_match.query_token_id == query_id
    assert {"test/rougeL", "test/loss"} <= set(metrics)
    predictions = [json.loads(line) for line in (Path(cfg.paths.output_dir) / "test_predictions.jsonl").open()]
    assert len(predictions) == 8 and all(row["source"].count("<doc>") == 6 for row in predictions)

    longer = ["++data.pair_builder.eval_num_documents=20", "generation.num_beams=2"]  # a key only the run has
    result = run_cli_in_process(f"ckpt_path={best_checkpoint(cfg)}", *longer, cwd=tmp_path, script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "eval").glob("*/*")
    rows = [json.loads(line) for line in (run_dir / "test_predictions.jsonl").open()]
    assert len(rows) == 8 and all(row["source"].count("<doc>") == 20 for row in rows)

    output = tmp_path / "predictions.jsonl"
    inputs = f"input_file={recall_data_dir / 'test.jsonl'}"
    result = run_cli_in_process(
        f"ckpt_path={best_checkpoint(cfg)}", inputs, f"output_file={output}", cwd=tmp_path, script="predict.py"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = [json.loads(line) for line in output.open()]
    # Every input row is queried (eval_max_examples caps validation and test only).
    assert len(predicted) == FIXTURE_SIZES["test"] and all(row["source"].count("<doc>") == 6 for row in predicted)


@pytest.mark.slow
def test_a_model_trained_on_short_sources_reads_long_ones_with_recall_at_evaluation(
    recall_data_dir: Path, tmp_path: Path
) -> None:
    cfg = recall_config(recall_data_dir, tmp_path, "data.max_source_length=64")
    train(cfg)
    assert cfg.model.memory is None
    too_long = run_cli_in_process(
        f"ckpt_path={best_checkpoint(cfg)}", "data.max_source_length=4096", cwd=tmp_path, script="eval.py"
    )
    assert too_long.returncode != 0
    assert "data.max_source_length=4096 exceeds model.max_positions=512" in too_long.stderr
    assert "Traceback" not in too_long.stderr

    recalled = run_cli_in_process(
        f"ckpt_path={best_checkpoint(cfg)}", "data.max_source_length=4096", *MEMORY, cwd=tmp_path, script="eval.py"
    )
    assert recalled.returncode == 0, recalled.stderr[-3000:]
    (run_dir,) = sorted((tmp_path / "outputs" / "eval").glob("*/*"))[-1:]
    config = (run_dir / "run_config.yaml").read_text()
    assert "top_k: 8" in config and "window: 64" in config
    assert "test/rougeL" in json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_the_relevance_losses_train_beside_the_cross_entropy_on_the_recall_set(
    recall_data_dir: Path, tmp_path: Path
) -> None:
    weights = ["task.relevance_loss_weight=1.0", "task.relevance_tagging_weight=1.0"]
    cfg = recall_config(recall_data_dir, tmp_path, *MEMORY, *weights)
    metrics, objects = train(cfg)
    assert 0 < metrics["train/relevance_loss"] < 10 and 0 < metrics["train/relevance_tagging_loss"] < 10
    assert "test/rougeL" in metrics
    probe = objects["task"].relevance_probe.weight
    assert probe.shape == (1, objects["model"].config.d_model)
    trained = [p for group in objects["trainer"].optimizers[0].param_groups for p in group["params"]]
    assert any(p is probe for p in trained)

    # The probe reloads with the checkpoint.
    result = run_cli_in_process(f"ckpt_path={best_checkpoint(cfg)}", cwd=tmp_path, script="eval.py")
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_relevance_loss_without_relevant_spans_below_zero_or_on_missing_heads_names_the_key(
    recall_data_dir: Path, tmp_path: Path
) -> None:
    summaries = ["task=summarization", f"data.data_dir={recall_data_dir}", *SHORT_TRAINING]  # one document each
    for key in ("relevance_loss_weight", "relevance_tagging_weight"):
        with pytest.raises(ConfigError, match="task.relevance_loss_weight and task.relevance_tagging_weight need"):
            train(tiny_run_config([*summaries, f"task.{key}=0.5"], tmp_path))
    result = run_cli_in_process("task=summarization", "task.relevance_loss_weight=-1", "debug=fast", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "task.relevance_loss_weight must be >= 0, got -1" in result.stderr
    weighted = [*MEMORY, "task.relevance_loss_weight=1.0"]
    with pytest.raises(ConfigError, match=r"task.relevance_heads=\[4\] names a head the model does not have"):
        train(recall_config(recall_data_dir, tmp_path, *weighted, "task.relevance_heads=[4]"))
    with pytest.raises(ConfigError, match="task.relevance_heads must be a non-empty list"):
        train(recall_config(recall_data_dir, tmp_path, *weighted, "task.relevance_heads=[]"))
    with pytest.raises(ConfigError, match=r"task.relevance_heads names a head twice: \[0, 0\]"):
        train(recall_config(recall_data_dir, tmp_path, *weighted, "task.relevance_heads=[0,0]"))
    with pytest.raises(ConfigError, match="set task.relevance_loss_weight > 0"):
        train(recall_config(recall_data_dir, tmp_path, *MEMORY, "task.relevance_heads=[0]"))
    with pytest.raises(ConfigError, match="task.relevance_tagging_weight must be >= 0, got -0.5"):
        train(recall_config(recall_data_dir, tmp_path, *MEMORY, "task.relevance_tagging_weight=-0.5"))
    with pytest.raises(ConfigError, match="task.relevance_tagging_weight=True: expected a number."):
        train(recall_config(recall_data_dir, tmp_path, *MEMORY, "task.relevance_tagging_weight=true"))


@pytest.mark.parametrize("key", ["relevance_loss_weight", "relevance_tagging_weight"])
def test_relevance_losses_refuse_a_model_without_an_encoder(key: str) -> None:
    tokenizer = fast_tokenizer("gpt2")
    decoder_only = CausalLM(tiny_model("gpt2", tokenizer), tokenizer)
    with pytest.raises(ConfigError, match=f"task.{key} needs an encoder-decoder model"):
        checked_weight(key, 1.0, decoder_only)
    assert checked_weight(key, 0, decoder_only) == 0.0


def test_bad_memory_settings_are_one_line_errors(tmp_path: Path) -> None:
    result = run_cli_in_process("memory=recall", "model.memory.top_k=0", "debug=fast", cwd=tmp_path)
    assert result.returncode != 0
    assert "model.memory.top_k must be a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr
