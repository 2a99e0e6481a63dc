"""`experiments/dialogue/bleu_matches.py` counts BLEU's matches as sacreBLEU does."""

from __future__ import annotations

import pytest
import sacrebleu

from experiments.dialogue.bleu_matches import copy_share, in_reference_style, last_turn, matches

HYPOTHESES = ["I don't know what you mean.", "How are you doing today?", "", "the cat sat on the mat the cat"]
REFERENCES = ["I don't know what to say.", "I am doing well, how are you doing?", "hello", "the cat sat on a mat"]


def test_match_rates_are_sacrebleu_precisions() -> None:
    bleu = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES])
    for order in range(1, 5):
        found = matches(HYPOTHESES, REFERENCES, REFERENCES, order)
        assert found["written"] == bleu.totals[order - 1]
        assert found["matched"] == bleu.counts[order - 1]
        assert 100 * found["matched"] / found["written"] == pytest.approx(bleu.precisions[order - 1])
        # Copied from a "last turn" equal to the reference: every match is in it.
        assert found["copied"] == found["matched"]


def test_last_turn_drops_the_markers_and_earlier_turns() -> None:
    source = "<topic>Do you have pets?<sep><speaker1>I do!<sep><speaker2>What kind of pets?"
    assert last_turn(source, "<sep>") == "What kind of pets?"


def test_copy_share_counts_the_ngrams_found_in_the_turn_answered() -> None:
    assert copy_share(["a b c", "d"], ["a b", "x"], 1) == pytest.approx(50.0)
    assert copy_share(["a b c", "d"], ["a b", "x"], 2) == pytest.approx(50.0)


def test_reference_style_takes_case_and_final_punctuation_from_the_reference() -> None:
    assert in_reference_style("I don't know. What about you?", "i dont know") == "i don't know. what about you?"
    assert in_reference_style("Oh yeah!", "Yes I do") == "Oh yeah"
    assert in_reference_style("Oh yeah!", "Yes, I do.") == "Oh yeah!"
    # A reference with no letters is its own lowercase: the reply is lowercased, never emptied.
    assert in_reference_style("Sure.", ":)") == "sure"
