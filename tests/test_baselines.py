"""`experiments/baselines.py` scores a fixed output with the task's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from experiments.baselines import lead_sentence, main, pop_option
from tests.conftest import FIXTURE_SIZES, embedded_rows


def test_pop_option_takes_the_scripts_own_key_and_leaves_the_rest_for_hydra() -> None:
    value, rest = pop_option(["task=dialogue", "constant=What about you?", "split=validation"], "constant")
    assert value == "What about you?"
    assert rest == ["task=dialogue", "split=validation"]
    assert pop_option(["task=dialogue"], "constant") == (None, ["task=dialogue"])


def test_constant_baseline_scores_one_text_for_every_example(
    tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    constant = "Treiber für LibreOffice"
    main(["task=translation", f"data.data_dir={tiny_data_dir}", "split=validation", f"constant={constant}"])
    report = json.loads(capsys.readouterr().out)

    references = [row["de"] for row in embedded_rows("ddtp_en_de", "validation", FIXTURE_SIZES["validation"])]
    hypotheses = [constant] * len(references)
    assert report["baseline"] == f"constant: {constant}"
    assert report["examples"] == len(references)
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert report["chrf"] > 0


def test_lead_after_a_heading_takes_that_sections_first_sentence() -> None:
    row = {"source": "LIBRARY\nStandard C library\nDESCRIPTION\nThe open() call opens a file. It may create it."}
    assert lead_sentence(row) == "LIBRARY"
    assert lead_sentence(row, after="DESCRIPTION") == "The open() call opens a file."
    assert lead_sentence(row, after="EXAMPLES") == "LIBRARY"


def test_lead_after_is_refused_outside_summarization() -> None:
    with pytest.raises(SystemExit, match="lead_after= is for task=summarization"):
        main(["task=dialogue", "lead_after=DESCRIPTION"])


def test_a_bad_override_is_named_without_a_traceback() -> None:
    with pytest.raises(SystemExit, match="Could not find 'task/dialog'"):
        main(["task=dialog"])


def test_an_unknown_split_is_named_with_the_ones_there_are(tiny_data_dir: Path) -> None:
    with pytest.raises(SystemExit, match="split='dev' is not one of this data's splits: train, validation, test"):
        main(["task=translation", f"data.data_dir={tiny_data_dir}", "split=dev"])
