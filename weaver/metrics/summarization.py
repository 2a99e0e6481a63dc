"""ROUGE as Google's `rouge-score` package computes it, averaged over the whole corpus (never over batches).

- ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures, ×100, from `rouge_score.rouge_scorer.RougeScorer` with
  `use_stemmer=True` (Porter stemmer on words longer than 3 characters). Its tokenizer lowercases and keeps only
  ASCII `[a-z0-9]` runs, so it is an English metric: "café" becomes "caf", and text with no ASCII letter or digit
  has no tokens at all (and scores 0).
- ROUGE-Lsum is the summary-level LCS over sentences, and rouge-score takes sentences to be the lines of the text.
  Hypotheses and references are therefore split into sentences first (`split_sentences`) and joined with "\\n",
  which is what the usual recipe does with nltk's punkt (`"\\n".join(nltk.sent_tokenize(text))`); punkt needs a
  model download, so a small regex splitter stands in for it. The split only moves line breaks, so ROUGE-1/2/L of
  the split text equal those of the raw text.
- Corpus score = the plain mean of the per-example F-measures. rouge-score's `BootstrapAggregator` reports as
  `mid` the median of bootstrap-resampled means of the same per-example scores: an estimate of this mean that
  depends on its random resampling; the plain mean is exact and reproducible.
- An empty hypothesis scores 0 on every ROUGE (rouge-score's own convention), and counts in the mean.
- `gen_len` = mean hypothesis length in words, i.e. whitespace-separated tokens, not model (BPE) tokens.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from rouge_score.rouge_scorer import RougeScorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Words that end with "." without ending a sentence, casefolded, without the ".". "etc." is left out on purpose:
# before a capital letter it far more often ends a sentence ("tools, etc. The package ...") than not.
ABBREVIATIONS = frozenset(
    {"approx", "cf", "dr", "eg", "esp", "ie", "incl", "jr", "mr", "mrs", "ms", "prof", "sr", "st", "viz", "vs"}
)
# Abbreviations only before a number ("No. 5", "Fig. 2"); elsewhere "no." is the word "no" ending a sentence.
NUMBER_ABBREVIATIONS = frozenset({"fig", "no", "nr", "pp", "vol"})
# A sentence-final punctuation run, the quotes or brackets that close the sentence, then the gap to the next one.
BOUNDARY = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*\s+")
OPENERS = "\"'\u2018\u201c(["
# "J." (an initial) and dotted acronyms without their last period ("U.S", "e.g").
INITIAL_OR_ACRONYM = re.compile(r"[^\W\d_](?:\.[^\W\d_])*")


def is_abbreviation(word: str, following: str) -> bool:
    """Whether `word` (the word before a ".", without it) is an abbreviation or an initial rather than the end of a
    sentence; `following` is the first character after the gap."""
    word = word.lstrip(OPENERS).casefold()
    if word in NUMBER_ABBREVIATIONS:
        return following.isdigit()
    return word in ABBREVIATIONS or INITIAL_OR_ACRONYM.fullmatch(word) is not None


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences, a regex stand-in for nltk's punkt (which needs a download).

    Every line break ends a sentence, and so does `.`, `!` or `?` (runs like `?!` or `...` included, plus closing
    quotes/brackets) followed by whitespace and then an uppercase letter or a digit, optionally after opening
    quotes/brackets. A single "." after an abbreviation ("e.g.", "Dr.", "vs.", "No." before a number), an initial
    ("J.") or a dotted acronym ("U.S.") does not end a sentence. A lowercase word after a period never starts one,
    so "version 2.0 is out. it works" stays whole: the splitter errs towards fewer, longer sentences. Empty
    sentences are dropped.
    """
    sentences = []
    for line in text.splitlines():
        start = 0
        for match in BOUNDARY.finditer(line):
            following = line[match.end() :].lstrip(OPENERS)[:1]
            if not (following.isupper() or following.isdigit()):
                continue
            words = line[start : match.start()].split()
            if match.group().rstrip() == "." and words and is_abbreviation(words[-1], following):
                continue
            sentences.append(line[start : match.end()].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def sentence_lines(text: str) -> str:
    """`text` with one sentence per line: the form rouge-score's ROUGE-Lsum expects."""
    return "\n".join(split_sentences(text))


@cache
def rouge_scorer() -> RougeScorer:
    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_signature() -> str:
    """What the numbers depend on, to record beside them (as sacreBLEU's signatures do)."""
    try:
        package_version = version("rouge-score")
    except PackageNotFoundError:  # pragma: no cover - a source checkout of rouge-score
        package_version = "unknown"
    return f"nrefs:1|stem:porter|tok:rouge-score-default|lsum-split:weaver-regex|agg:mean|version:{package_version}"


def rouge_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean per-example ROUGE F-measures ×100, in `ROUGE_TYPES` order; 0.0 for an empty corpus."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    scorer = rouge_scorer()
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(target=sentence_lines(reference), prediction=sentence_lines(hypothesis))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    count = max(len(hypotheses), 1)
    return {name: 100 * total / count for name, total in totals.items()}


def mean_words(texts: list[str]) -> float:
    """Mean length in whitespace-separated words; 0.0 for no texts."""
    return sum(len(text.split()) for text in texts) / max(len(texts), 1)


def summarization_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """ROUGE-L first (the monitored metric, shown in the progress bar), then ROUGE-1/2/Lsum and `gen_len`;
    and the signature of the ROUGE settings."""
    rouge = rouge_scores(hypotheses, references)
    scores = {
        "rougeL": rouge["rougeL"],
        "rouge1": rouge["rouge1"],
        "rouge2": rouge["rouge2"],
        "rougeLsum": rouge["rougeLsum"],
        "gen_len": mean_words(hypotheses),
    }
    return scores, {"rouge": rouge_signature()}
