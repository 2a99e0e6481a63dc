"""Is a dialogue run's BLEU different from repeating the last context turn, or only from this test split's luck?
sacreBLEU's paired bootstrap resampling (Koehn, 2004): 1,000 resamples of the test replies, each system scored on
the same resample as the baseline; the 95% interval of each system's BLEU and the p-value of its difference.

    python -m experiments.dialogue.bleu_significance outputs/<date>/<time>/test_predictions.jsonl
    python -m experiments.dialogue.bleu_significance experiments/dialogue/steps_8000/test_predictions.jsonl.gz \\
        experiments/dialogue/no_label_smoothing/test_predictions_beam16.jsonl.gz

Every file must hold predictions for the same test references, in the same order. The baseline is the last turn as
the first file's `source` kept it (cut to the run's `max_source_length`), as in `bleu_matches.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from experiments.dialogue.bleu_matches import last_turn, read_predictions

BASELINE = "repeat the last turn"


def paired_bootstrap(
    systems: dict[str, list[str]], baseline: list[str], references: list[str], resamples: int = 1000
) -> list[tuple[str, float, float, float | None]]:
    """(system, BLEU, half-width of its 95% interval, p-value against the baseline), the baseline first with no
    p-value. sacreBLEU's test, with its fixed seed: the same inputs give the same figures."""
    named = [(BASELINE, baseline), *systems.items()]
    _, results = PairedTest(named, {"BLEU": BLEU()}, [references], test_type="bs", n_samples=resamples)()
    return [(name, r.score, float(r.ci), r.p_value) for name, r in zip(results["System"], results["BLEU"], strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, nargs="+", help="runs' test_predictions.jsonl (or .jsonl.gz)")
    parser.add_argument("--separator", default="<sep>", help="the turn separator of the runs' data config")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    runs = {str(path): read_predictions(path) for path in args.predictions}
    first = next(iter(runs.values()))
    references = [row["reference"] for row in first]
    for path, rows in runs.items():
        if [row["reference"] for row in rows] != references:
            parser.error(f"{path}: its references differ from {args.predictions[0]}'s; compare runs on one test split")
    baseline = [last_turn(row["source"], args.separator) for row in first]
    systems = {path: [row["hypothesis"] for row in rows] for path, rows in runs.items()}
    print(f"{len(references)} replies, {args.resamples} paired bootstrap resamples")
    print("| system | BLEU | 95% interval | p-value of the difference |")
    print("| --- | --- | --- | --- |")
    for name, score, half_width, p_value in paired_bootstrap(systems, baseline, references, args.resamples):
        p = "-" if p_value is None else f"{p_value:.3f}"
        print(f"| {name} | {score:.2f} | {score - half_width:.2f}-{score + half_width:.2f} | {p} |")


if __name__ == "__main__":
    main()
