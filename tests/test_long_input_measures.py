"""The long-input measurement helpers: where recall weight falls, and ROUGE-L gaps with their bootstrap."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from experiments.long_inputs.manpages_ceiling import page_ceiling, summarise
from experiments.long_inputs.recall_mass import document_spans, probe_shares, shares
from experiments.long_inputs.rouge_gap import paired_bootstrap, per_example_rouge_l
from experiments.long_inputs.rouge_vs_length import queries, scores
from weaver.config import pretrained_path
from weaver.data import PretrainedTokenizer
from weaver.explain.attention import RecordedAttention
from weaver.explain.explainer import Explanation
from weaver.metrics.summarization import rouge_scorer
from weaver.models.weaver import WeaverConfig, WeaverModel


def explanation(indices: list[int], weights: list[float]) -> Explanation:
    """One layer, one head, one output token that fetched `indices` with `weights`."""
    tokens = [" pkg", "<query>", "<doc>", " a", " b", "<doc>", " c", " d", " e"]
    recalled = RecordedAttention(torch.tensor([[[weights]]]), torch.tensor([[[indices]]]))
    return Explanation("recall", tokens, ["x"], "x", torch.zeros(1, len(tokens)).to_sparse(), recalled=recalled)


def test_recall_shares_split_the_weight_between_query_queried_document_and_the_rest() -> None:
    example = explanation([3, 0, 7, 4], [0.4, 0.1, 0.3, 0.2])
    spans = document_spans(example, "<doc>")
    assert spans == [(2, 5), (5, 9)]
    measured = shares(example, spans[0], spans[0][0])
    assert np.isclose(measured["queried"], 0.6) and np.isclose(measured["query"], 0.1)
    assert measured["top_entry_in_queried"] == 1.0 and np.isclose(measured["queried_token_share"], 3 / 9)
    assert shares(example, spans[1], spans[0][0])["top_entry_in_queried"] == 0.0
    assert np.allclose(measured["queried_by_head"], [0.6])


def test_recall_shares_are_also_given_for_each_head() -> None:
    two_heads = explanation([3, 0], [0.5, 0.5])
    indices = torch.tensor([[[[3, 4]], [[0, 7]]]])  # (L=1, H=2, T=1, K=2): head 0 inside the first document
    two_heads.recalled = RecordedAttention(torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]]), indices)
    measured = shares(two_heads, (2, 5), 2)
    assert np.allclose(measured["queried_by_head"], [1.0, 0.0]) and np.isclose(measured["queried"], 0.5)


def test_probe_shares_are_the_probe_softmax_mass_in_the_queried_document_with_the_query_left_out() -> None:
    model = WeaverModel(WeaverConfig(vocab_size=50, d_model=32, num_heads=4, ffn_dim=64, max_positions=64))
    probe = torch.nn.Linear(32, 1)
    torch.nn.init.zeros_(probe.weight)  # the same score everywhere: the softmax spreads evenly
    run = SimpleNamespace(task=SimpleNamespace(model=model.eval(), relevance_probe=probe))
    ignored = [[0, 2]]  # the query
    rows = [
        {"input_ids": list(range(3, 12)), "relevant_spans": [[2, 5]], "ignored_spans": ignored},
        {"input_ids": list(range(3, 12)), "relevant_spans": [[5, 9]], "ignored_spans": ignored},
    ]
    measured = probe_shares(run, rows)
    assert np.isclose(measured["probe_queried"], (3 / 7 + 4 / 7) / 2)
    assert measured["probe_top_in_queried"] == 0.5  # ties go to the first token after the query


def test_the_paired_bootstrap_brackets_a_real_gap_and_a_null_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(20, 40, 200)
    gap = paired_bootstrap(a, a - 10, samples=2000, seed=0)
    assert gap["difference_95"][0] > 9 and gap["ratio_95"][0] > 1
    same = paired_bootstrap(a, a + rng.normal(0, 1, 200), samples=2000, seed=0)
    assert same["difference_95"][0] < 0 < same["difference_95"][1]
    rows = [{"id": 3, "reference": "parse pathname components", "hypothesis": "parse a pathname"}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    assert np.isclose(per_example_rouge_l(path)[3], 100 * 2 * (2 / 3 * 2 / 3) / (4 / 3))
    zipped = tmp_path / "predictions.jsonl.gz"  # as the recorded runs keep them
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert per_example_rouge_l(zipped) == per_example_rouge_l(path)


def test_the_length_plot_reads_each_runs_scores_by_documents_and_truncation_and_its_query_count(tmp_path: Path) -> None:
    for name, score in (
        ("metrics_1_documents", 30.0),
        ("metrics_40_documents", 20.0),
        ("metrics_40_truncated_documents", 15.0),
    ):
        (tmp_path / f"{name}.json").write_text(json.dumps({"metrics": {"test/rougeL": score, "test/rouge1": 0.0}}))
    with gzip.open(tmp_path / "test_predictions_40_documents.jsonl.gz", "wt") as file:
        file.writelines(json.dumps({"id": i, "hypothesis": "x", "reference": "y"}) + "\n" for i in range(7))
    assert scores(tmp_path) == {(1, False): 30.0, (40, False): 20.0, (40, True): 15.0}
    assert queries(tmp_path, 40) == 7


def test_the_man_page_ceiling_finds_summary_words_only_the_whole_page_holds() -> None:
    tokenizer = PretrainedTokenizer(pretrained_path("weaver_small_pretrained")).load()
    row = {
        "summary": "reposition the file offset",
        "document": "LIBRARY Standard C library. " * 8 + "It will reposition the file offset. Another sentence.",
    }
    page = page_ceiling(tokenizer, rouge_scorer(), row, positions=16)
    assert page["truncated"] and page["rouge1_recall_head"] == 0.0 and page["rouge1_recall_whole"] == 1.0
    assert page["oracle_rougeL_head"] == 0.0 and np.isclose(page["oracle_rougeL_whole"], 0.8)
    whole = page_ceiling(tokenizer, rouge_scorer(), row, positions=512)
    assert not whole["truncated"] and whole["oracle_rougeL_head"] == whole["oracle_rougeL_whole"]
    summary = summarise([page, whole])
    assert summary["truncated_pages"] == 1 and summary["oracle_rougeL_pages_whole_higher"] == 1
