"""Score each task's trivial baseline on the same split, data config and metrics as a trained model.

    python experiments/baselines.py task=translation     # copy: the English source as the German output
    python experiments/baselines.py task=summarization   # lead: the document's first sentence
    python experiments/baselines.py task=dialogue        # last turn: repeat the context's last turn
    python experiments/baselines.py task=dialogue constant="What about you?"   # one fixed output for every example
    python experiments/baselines.py task=summarization data=manpages lead_after=DESCRIPTION   # lead of a section

A constant output shows what a metric gives for writing nothing specific to the input. `lead_after=HEADING` takes
the first sentence after the line `HEADING` instead (a man page's document opens with LIBRARY or SYNOPSIS). Any data
override a training run takes works here too (e.g. `data.data_dir=...`); `split=validation` scores the validation
split. Prints the scores as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import open_dict

from weaver.config import config_dir, register_resolvers
from weaver.instantiate import build
from weaver.metrics.dialogue import dialogue_scores
from weaver.metrics.summarization import split_sentences, summarization_scores
from weaver.metrics.translation import translation_scores

Scores = Callable[[list[str], list[str]], tuple[dict[str, float], dict[str, str]]]


def copy_source(row: dict[str, Any]) -> str:
    return row["source"]


def lead_sentence(row: dict[str, Any], after: str | None = None) -> str:
    """The source's first sentence; with `after`, the first one after the line `after` when there is one."""
    sentences = split_sentences(row["source"])
    if after in sentences:
        sentences = sentences[sentences.index(after) + 1 :]
    return sentences[0] if sentences else ""


def last_turn(row: dict[str, Any], speaker_tokens: tuple[str, ...]) -> str:
    turn = row["context"][-1] if row["context"] else ""
    speaker = next((token for token in speaker_tokens if turn.startswith(token)), "")
    return turn[len(speaker) :].strip()


def baseline_for(task_name: str, cfg: Any) -> tuple[str, Callable[[dict[str, Any]], str], Scores]:
    if task_name == "translation":
        return "copy source", copy_source, translation_scores
    if task_name == "summarization":
        return "lead sentence", lead_sentence, summarization_scores
    if task_name == "dialogue":
        speakers = tuple(cfg.data.pair_builder.speaker_tokens)
        return "repeat last turn", lambda row: last_turn(row, speakers), dialogue_scores
    raise SystemExit(f"Error: no baseline for task '{task_name}'.")


def pop_option(overrides: list[str], key: str) -> tuple[str | None, list[str]]:
    """The value of this script's own `key=...` (None when absent) and the overrides left for Hydra."""
    prefix = f"{key}="
    value = next((o[len(prefix) :] for o in overrides if o.startswith(prefix)), None)
    return value, [o for o in overrides if not o.startswith(prefix)]


def main(overrides: list[str]) -> None:
    register_resolvers()
    split, overrides = pop_option(overrides, "split")
    constant, overrides = pop_option(overrides, "constant")
    lead_after, overrides = pop_option(overrides, "lead_after")
    split = split or "test"
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    except HydraException as error:  # a bad override: Hydra's message, which names it, without the traceback
        raise SystemExit(f"Error: {error}") from None
    with open_dict(cfg):
        cfg.paths.output_dir = "."  # nothing is written
    name, predict, scores_of = baseline_for(cfg.task_name, cfg)
    if lead_after is not None:
        if cfg.task_name != "summarization":
            raise SystemExit(f"Error: lead_after= is for task=summarization, not task={cfg.task_name}.")
        name, predict = f"lead sentence after {lead_after}", lambda row: lead_sentence(row, lead_after)
    if constant is not None:
        name, predict = f"constant: {constant}", lambda row: constant
    datamodule = build(cfg.data, "data", tokenizer=None, cache_dir=cfg.paths.cache_dir)
    pairs = datamodule.pairs()
    if split not in pairs:
        raise SystemExit(f"Error: split='{split}' is not one of this data's splits: {', '.join(pairs)}.")
    rows = list(pairs[split])
    scores, signatures = scores_of([predict(row) for row in rows], [row["target"] for row in rows])
    report = {"task": cfg.task_name, "baseline": name, "split": split, "examples": len(rows), **scores}
    print(json.dumps({**report, "signatures": signatures}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
