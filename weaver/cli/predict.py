"""`python predict.py ckpt_path=... input_file=... | input="..." | interactive=true` / `weaver-predict`.

Writes JSONL (`id`: the input's row, 0-based; `source`, `hypothesis`; with `reference` and the task's main metric
on that example as `score` where its row has a reference; with `explain=true`, the source spans the output attended
to most as `spans`) and, with references, the corpus metrics over the rows that have one and their signatures to
`metrics.json`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig

from weaver.checkpoints import restore_run
from weaver.cli.evaluate import write_run_config
from weaver.cli.train import write_metrics
from weaver.data.sources import check_text_file, data_suffix, existing_file, load_file, text_lines
from weaver.errors import ConfigError
from weaver.explain import Explainer, Explanation
from weaver.inference import Example, Predictor

log = logging.getLogger(__name__)


def read_examples(cfg: DictConfig, predictor: Predictor) -> list[Example]:
    if cfg.get("reply_to") == "last_turn" and not predictor.is_dialogue:
        raise ConfigError("reply_to=last_turn needs a dialogue checkpoint (trained with task=dialogue).")
    if cfg.input is not None:
        return [predictor.example(str(cfg.input))]
    path = existing_file(cfg.input_file, "input_file")
    if data_suffix(path) == ".txt":  # one source per line, compressed or not
        check_text_file(path, "input_file")  # UTF-8 throughout, and not empty
        return [predictor.example(line, number - 1) for number, line in text_lines(path) if line.strip()]
    dataset: Dataset = load_file("input", str(path), cfg.paths.cache_dir, key="input_file")
    return predictor.examples_from(dataset, last_turn=cfg.get("reply_to") == "last_turn")


def write_predictions(
    path: Path,
    examples: list[Example],
    hypotheses: list[str],
    predictor: Predictor,
    explanations: list[Explanation] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as file:
        for index, (example, hypothesis) in enumerate(zip(examples, hypotheses, strict=True)):
            record: dict[str, Any] = {"id": example.id, "source": example.source, "hypothesis": hypothesis}
            if example.conversation_id is not None:
                record["conversation_id"] = example.conversation_id
            if example.reference is not None:
                record["reference"] = example.reference
                score = predictor.run.task.example_score(hypothesis, example.reference, example.source)
                if score is not None:
                    record["score"] = score
            if explanations is not None:
                record["spans"] = [vars(span) for span in explanations[index].spans()]
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(path)  # a kill mid-write leaves the previous file whole
    log.info("Wrote %d predictions to %s", len(examples), path)


def chat(predictor: Predictor, topic: Any = None) -> None:
    """A conversation on the terminal, about `topic` if given; the model answers as the second speaker. `/reset`
    forgets, `/quit` ends."""
    if not predictor.is_dialogue:
        raise ConfigError("interactive=true needs a dialogue checkpoint (trained with task=dialogue).")
    topic_context = predictor.topic_context(topic)
    print("Chat with the model: /reset starts over, /quit (or Ctrl-D) ends.")
    history: list[str] = []
    for line in sys.stdin:
        text = line.strip()
        if text == "/quit":
            break
        if text == "/reset":
            history = []
            continue
        if text:
            history.append(predictor.format_turn(0, text))
            reply = predictor.reply(history, topic_context)
            history.append(predictor.format_turn(1, reply))
            print(f"> {reply}", flush=True)


def predict(cfg: DictConfig, changes: dict[str, Any]) -> None:
    """Generate for the inputs `check_predict` accepted, with the checkpoint's settings changed by `changes`."""
    output_dir = Path(cfg.paths.output_dir)
    overrides = {**changes, "paths.output_dir": str(output_dir), "paths.cache_dir": cfg.paths.cache_dir}
    run = restore_run(cfg.ckpt_path, overrides)
    write_run_config(run.cfg, output_dir)
    predictor = Predictor(run, batch_size=cfg.batch_size)
    if cfg.interactive:
        chat(predictor, cfg.topic)
        return
    examples = read_examples(cfg, predictor)
    explanations = None
    if cfg.explain:  # the outputs come from the explainer's own generation, with the same settings
        explanations = predictor.map_batches(examples, Explainer(run.task.model, run.tokenizer, run.task.generation))
        hypotheses = [explanation.output_text for explanation in explanations]
    else:
        hypotheses = list(predictor.generate(examples))
    if cfg.input is not None:
        print(hypotheses[0])
    predictions = Path(cfg.output_file or output_dir / "predictions.jsonl").expanduser()
    write_predictions(predictions, examples, hypotheses, predictor, explanations)
    referenced = [i for i, example in enumerate(examples) if example.reference is not None]
    if referenced:
        if len(referenced) < len(examples):
            log.info("Corpus metrics over the %d of %d inputs that have a reference.", len(referenced), len(examples))
        scores = run.task.score(
            [hypotheses[i] for i in referenced],
            [str(examples[i].reference) for i in referenced],
            [examples[i].source for i in referenced],
        )
        write_metrics(output_dir / "metrics.json", scores, run.task.metric_signatures)
