"""`experiments/dialogue/bleu_significance.py`: sacreBLEU's paired bootstrap against repeating the last turn."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
import sacrebleu

from experiments.dialogue import bleu_significance
from experiments.dialogue.bleu_significance import BASELINE, paired_bootstrap

REFERENCES = [f"I think number {i} is a fine answer to the question of the day" for i in range(40)]
# Two replies in three closer to their reference than the third: resamples differ in score.
GOOD = [f"I think number {i} is a fine answer" + (" to the question" if i % 3 else "") for i in range(40)]
LAST_TURNS = [f"what do you make of question {i} today ?" for i in range(40)]


def test_scores_are_corpus_bleu_and_a_real_difference_is_significant() -> None:
    rows = paired_bootstrap({"good": GOOD}, LAST_TURNS, REFERENCES, resamples=200)
    assert [name for name, *_ in rows] == [BASELINE, "good"]
    (_, base_score, _, base_p), (_, good_score, half_width, good_p) = rows
    assert base_score == pytest.approx(sacrebleu.corpus_bleu(LAST_TURNS, [REFERENCES]).score)
    assert good_score == pytest.approx(sacrebleu.corpus_bleu(GOOD, [REFERENCES]).score)
    assert base_p is None and good_p < 0.05 and half_width > 0


def write_predictions(path: Path, hypotheses: list[str], references: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as file:
        for i, (hypothesis, reference) in enumerate(zip(hypotheses, references, strict=True)):
            source = f"<speaker1>{LAST_TURNS[i]}"
            file.write(json.dumps({"id": i, "source": source, "reference": reference, "hypothesis": hypothesis}) + "\n")
    return path


def test_main_prints_a_row_per_run_and_refuses_other_references(tmp_path, monkeypatch, capsys) -> None:
    good = write_predictions(tmp_path / "good.jsonl.gz", GOOD, REFERENCES)
    monkeypatch.setattr(sys, "argv", ["bleu_significance", str(good), "--resamples", "100"])
    bleu_significance.main()
    table = capsys.readouterr().out
    assert f"| {BASELINE} | {sacrebleu.corpus_bleu(LAST_TURNS, [REFERENCES]).score:.2f} |" in table
    assert f"| {good} |" in table

    other = write_predictions(tmp_path / "other.jsonl.gz", GOOD, REFERENCES[::-1])
    monkeypatch.setattr(sys, "argv", ["bleu_significance", str(good), str(other)])
    with pytest.raises(SystemExit):
        bleu_significance.main()
    assert f"{other}: its references differ" in capsys.readouterr().err
