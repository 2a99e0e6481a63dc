"""The summarization task: logged ROUGE is rouge-score's over the whole corpus, whatever the batching; its config
composes with its own data, model, generation and monitor; and it trains end to end on a slice of its corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig
from rouge_score import rouge_scorer

from tests.conftest import compose_config, embedded_slice, tiny_run_config
from tests.metrics.rouge_corpus import HYPOTHESES, HYPOTHESIS_LINES, REFERENCE_LINES, REFERENCES
from tests.tasks.scripted import run_scripted_test
from weaver.cli.train import train
from weaver.tasks import SummarizationTask

SUMMARY_FIXTURE_SIZES = {"train": 160, "validation": 16, "test": 16}


def run_test(batch_size: int, tmp_path: Path) -> tuple[SummarizationTask, dict[str, float]]:
    sources = [f"document {i}" for i in range(len(REFERENCES))]
    return run_scripted_test(
        SummarizationTask, HYPOTHESES, REFERENCES, batch_size, sources, predictions_file=tmp_path / "predictions.jsonl"
    )


def mean_f_measure(rouge_type: str, references: list[str], hypotheses: list[str]) -> float:
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    scores = [scorer.score(r, h)[rouge_type].fmeasure for r, h in zip(references, hypotheses, strict=True)]
    return 100 * sum(scores) / len(scores)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_logged_rouge_equals_rouge_score_on_the_corpus(batch_size: int, tmp_path: Path) -> None:
    task, metrics = run_test(batch_size, tmp_path)
    for rouge_type in ("rouge1", "rouge2", "rougeL"):
        expected = mean_f_measure(rouge_type, REFERENCES, HYPOTHESES)
        assert metrics[f"test/{rouge_type}"] == pytest.approx(expected, abs=1e-4), rouge_type
    lsum = mean_f_measure("rougeLsum", REFERENCE_LINES, HYPOTHESIS_LINES)
    assert metrics["test/rougeLsum"] == pytest.approx(lsum, abs=1e-4)
    assert lsum != pytest.approx(mean_f_measure("rougeLsum", REFERENCES, HYPOTHESES))  # the split mattered
    assert metrics["test/gen_len"] == pytest.approx(sum(len(h.split()) for h in HYPOTHESES) / len(HYPOTHESES))
    assert task.metric_signatures["rouge"].startswith("nrefs:1|stem:porter")
    assert sorted(metrics) == sorted(task.logged_metrics("test"))  # what monitor.metric is checked against
    written = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [row["hypothesis"] for row in written] == HYPOTHESES  # the empty hypothesis is kept and scored 0


def test_task_defaults_stay_overridable() -> None:
    cfg = compose_config(["task=summarization", "generation=greedy", "model=weaver_tiny", "trainer.max_steps=5"])
    assert cfg.generation.num_beams == 1 and cfg.generation.max_new_tokens == 48  # the task's length still applies
    assert cfg.model.d_model == 64 and cfg.trainer.max_steps == 5
    assert compose_config(["task=summarization", "debug=fast"]).generation.max_new_tokens == 16


@pytest.fixture(scope="module")
def tiny_summaries_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded_slice(tmp_path_factory.mktemp("summaries_tiny"), "debian_summaries", SUMMARY_FIXTURE_SIZES)


@pytest.fixture
def summaries_train_config(tiny_summaries_dir: Path, tmp_path: Path) -> DictConfig:
    """`task=summarization` shrunk to seconds."""
    overrides = [
        "task=summarization",
        f"data.data_dir={tiny_summaries_dir}",
        "data.max_source_length=96",
        "data.max_tokens=1600",
        "data.eval_max_tokens=1600",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "scheduler.num_warmup_steps=1",
        "task.max_generate_examples=8",
    ]
    return tiny_run_config(overrides, tmp_path)


def test_train_on_a_slice_of_the_summaries_corpus(summaries_train_config: DictConfig) -> None:
    metrics, _ = train(summaries_train_config)
    names = ("rougeL", "rouge1", "rouge2", "rougeLsum", "gen_len", "loss")
    assert {f"{stage}/{name}" for stage in ("val", "test") for name in names} <= set(metrics)
    assert all(0.0 <= metrics[f"test/{name}"] <= 100.0 for name in names[:4])
    run_dir = Path(summaries_train_config.paths.output_dir)
    assert any("val_rougeL" in path.name for path in (run_dir / "checkpoints").glob("*.ckpt"))
    predictions = (run_dir / "test_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == SUMMARY_FIXTURE_SIZES["test"]
    signatures = json.loads((run_dir / "metrics.json").read_text())["signatures"]
    assert signatures["rouge"].startswith("nrefs:1|stem:porter")
