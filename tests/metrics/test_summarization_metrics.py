"""ROUGE equals Google's rouge-score averaged over the corpus; the sentence splitter behind ROUGE-Lsum."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer, scoring

from tests.metrics.rouge_corpus import HYPOTHESES, REFERENCES
from weaver.metrics.summarization import (
    ROUGE_TYPES,
    mean_words,
    rouge_scores,
    sentence_lines,
    split_sentences,
    summarization_scores,
)


def reference_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """rouge-score itself, example by example: ROUGE-1/2/L on the raw texts, ROUGE-Lsum on one sentence a line."""
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = plain.score(reference, hypothesis)
        scores |= lsum.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(hypothesis)))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(hypotheses) for name, total in totals.items()}


def test_corpus_rouge_is_the_mean_of_rouge_score_f_measures() -> None:
    expected = reference_scores(HYPOTHESES, REFERENCES)
    assert rouge_scores(HYPOTHESES, REFERENCES) == pytest.approx(expected, abs=1e-9)
    # The fixture exercises what it claims: Lsum differs from L, and partial matches are neither 0 nor 100.
    assert expected["rougeLsum"] != pytest.approx(expected["rougeL"])
    assert 0 < expected["rouge2"] < expected["rouge1"] < 100


def test_rouge_lsum_scores_sentences_on_separate_lines() -> None:
    reference, hypothesis = REFERENCES[4], HYPOTHESES[4]
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    split = lsum.score(sentence_lines(reference), sentence_lines(hypothesis))["rougeLsum"].fmeasure
    unsplit = lsum.score(reference, hypothesis)["rougeLsum"].fmeasure
    assert split != pytest.approx(unsplit)
    assert rouge_scores([hypothesis], [reference])["rougeLsum"] == pytest.approx(100 * split)


def test_plain_mean_is_what_the_bootstrap_aggregator_estimates() -> None:
    """rouge-score's BootstrapAggregator reports the median of resampled means as `mid`: close to the plain mean."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    aggregator = scoring.BootstrapAggregator(n_samples=2000)
    for hypothesis, reference in zip(HYPOTHESES * 30, REFERENCES * 30, strict=True):
        aggregator.add_scores(scorer.score(sentence_lines(reference), sentence_lines(hypothesis)))
    mid = {name: 100 * score.mid.fmeasure for name, score in aggregator.aggregate().items()}
    assert rouge_scores(HYPOTHESES, REFERENCES) == pytest.approx(mid, abs=1.0)


def test_empty_and_unscoreable_hypotheses_score_zero() -> None:
    scores = rouge_scores(["", "...", "日本語"], ["a tool", "a tool", "日本語 tool"])
    assert scores == dict.fromkeys(ROUGE_TYPES, 0.0)
    assert rouge_scores([], []) == dict.fromkeys(ROUGE_TYPES, 0.0)


def test_exact_match_scores_one_hundred_and_stemming_matches_inflections() -> None:
    assert rouge_scores(["Python 3 bindings. For libfoo"], ["Python 3 bindings. For libfoo"]) == pytest.approx(
        dict.fromkeys(ROUGE_TYPES, 100.0)
    )
    assert rouge_scores(["runs libraries"], ["running library"])["rouge1"] == pytest.approx(100.0)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_summarization_scores_order_gen_len_and_signature() -> None:
    scores, signatures = summarization_scores(HYPOTHESES, REFERENCES)
    assert list(scores) == ["rougeL", "rouge1", "rouge2", "rougeLsum", "gen_len"]  # rougeL: the monitored metric
    assert {name: scores[name] for name in ROUGE_TYPES} == pytest.approx(reference_scores(HYPOTHESES, REFERENCES))
    assert scores["gen_len"] == pytest.approx(sum(len(h.split()) for h in HYPOTHESES) / len(HYPOTHESES))
    assert mean_words(["two words", "", " spaced   out  text "]) == pytest.approx(5 / 3)
    assert signatures["rouge"].startswith("nrefs:1|stem:porter|") and "agg:mean" in signatures["rouge"]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello world. This is it.", ["Hello world.", "This is it."]),
        ("It works! Does it? Yes... 3 times.", ["It works!", "Does it?", "Yes...", "3 times."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("It ends here. (Then a remark.)", ["It ends here.", "(Then a remark.)"]),
        ("Über alles. Ärger folgt.", ["Über alles.", "Ärger folgt."]),
        ("first line\nsecond line. Third", ["first line", "second line.", "Third"]),
        ("  padded.   Text  \n\n", ["padded.", "Text"]),
        ("", []),
    ],
)
def test_splitter_breaks_after_sentence_punctuation_before_a_capital_or_digit(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize(
    "text",
    [
        "Formats, e.g. PNG and JPEG, are read.",
        "Formats (i.e. PNG) are read.",
        "Written by Dr. Smith and Prof. Jones.",
        "Tested vs. Python 3 and cf. Section 2.",
        "See No. 5 and Fig. 2 of the manual.",
        "By J. R. R. Tolkien in the U.S. Army manual.",
        "version 2.0 is out. it works with python3.11 now.",
        "a library for parsing xml. with lowercase after the period.",
    ],
)
def test_splitter_keeps_abbreviations_initials_and_lowercase_continuations_whole(text: str) -> None:
    assert split_sentences(text) == [text]


def test_splitter_still_ends_sentences_at_ambiguous_words() -> None:
    assert split_sentences("Install tools, etc. The rest is optional.") == [
        "Install tools, etc.",
        "The rest is optional.",
    ]
    assert split_sentences("The answer is no. No means no.") == ["The answer is no.", "No means no."]


def test_splitting_only_moves_line_breaks() -> None:
    for text in REFERENCES + HYPOTHESES:
        assert sentence_lines(text).split() == text.split()
