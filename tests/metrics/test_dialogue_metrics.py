"""Dialogue metrics on small hand-computed examples; BLEU is sacreBLEU's."""

from __future__ import annotations

import string

import pytest
import sacrebleu

from weaver.metrics.dialogue import dialogue_scores, distinct_n, normalize, unigram_f1


def test_normalize_lowercases_and_drops_punctuation_and_articles() -> None:
    assert normalize("The cat, a DOG & an owl!") == "cat dog owl"
    assert normalize("It's the-end.") == "it s end"
    assert normalize("theater anthem") == "theater anthem"  # articles only as whole words
    assert normalize(string.punctuation) == ""  # ParlAI's set: every ASCII punctuation mark, the backslash too
    assert unigram_f1("C:\\Users\\me", "c users me") == 1.0


def test_unigram_f1_matches_a_hand_computation() -> None:
    # hypothesis words: i like cats a lot -> [i, like, cats, lot]; reference: [i, like, dogs]
    # shared 2: precision 2/4, recall 2/3, F1 = 2 * (1/2 * 2/3) / (1/2 + 2/3) = 4/7
    assert unigram_f1("I like cats a lot.", "i like dogs") == pytest.approx(4 / 7)
    # repeated words count as often as both sides have them: shared {yes: 1} -> p 1/3, r 1, F1 1/2
    assert unigram_f1("yes yes yes", "yes") == pytest.approx(0.5)
    assert unigram_f1("Hello!", "hello") == 1.0
    assert unigram_f1("", "hello") == 0.0
    assert unigram_f1("the", "a") == 0.0  # nothing left after normalisation


def test_distinct_n_counts_unique_ngrams_over_all_responses() -> None:
    responses = ["i am fine", "I am good", "fine"]
    # unigrams: i am fine i am good fine = 7, unique {i, am, fine, good} = 4
    assert distinct_n(responses, 1) == pytest.approx(4 / 7)
    # bigrams: (i am) (am fine) (i am) (am good) = 4, unique 3; "fine" alone has none
    assert distinct_n(responses, 2) == pytest.approx(3 / 4)
    assert distinct_n(["", "word"], 2) == 0.0


def test_corpus_scores() -> None:
    hypotheses = ["i like cats a lot.", "i am fine", "yes yes yes", ""]
    references = ["i like dogs", "I am fine, thanks", "yes", "see you"]
    scores, signatures = dialogue_scores(hypotheses, references)
    assert list(scores) == ["f1", "bleu", "distinct_1", "distinct_2", "length"]
    # per-example F1: 4/7; [i, am, fine] vs [i, am, fine, thanks] -> 2 * 1 * 3/4 / (7/4) = 6/7; 1/2; 0
    assert scores["f1"] == pytest.approx(100 * (4 / 7 + 6 / 7 + 1 / 2 + 0) / 4)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    # words: i like cats a lot. | i am fine | yes yes yes -> 11 total, unique: i like cats a lot. am fine yes = 8
    assert scores["distinct_1"] == pytest.approx(8 / 11)
    assert scores["length"] == pytest.approx(11 / 4)
    assert signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        dialogue_scores(["a", "b"], ["a"])
