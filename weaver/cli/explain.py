"""`python explain.py ckpt_path=... input="..." | input_file=... [method=...]` / `weaver-explain`.

For each source, generates its output with the checkpoint's settings and writes the relevance of each source token
to each output token: `example_<n>.png` (heatmap), `example_<n>.html` (one self-contained page) and
`example_<n>.json` (the scores), in the run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from weaver.checkpoints import restore_run
from weaver.cli.predict import read_examples
from weaver.explain import Explainer, check_method, write_views
from weaver.inference import Predictor

log = logging.getLogger(__name__)


def explain(cfg: DictConfig, changes: dict[str, Any]) -> list[Path]:
    """The files written, three per example, for the inputs `check_explain` accepted."""
    if cfg.method is not None:
        check_method(cfg.method)
    run = restore_run(cfg.ckpt_path, {**changes, "paths.cache_dir": cfg.paths.cache_dir})
    explainer = Explainer(
        run.task.model,
        run.tokenizer,
        run.task.generation,
        method=cfg.method,
        layers=cfg.layers,
        heads=cfg.heads,
        integration_steps=cfg.integration_steps,
        max_gradient_source_tokens=cfg.max_gradient_source_tokens,
    )
    predictor = Predictor(run, batch_size=cfg.batch_size)
    examples = read_examples(cfg, predictor)
    explanations = predictor.map_batches(examples, explainer)
    if cfg.input is not None:
        print(explanations[0].output_text)
    output_dir = Path(cfg.paths.output_dir)
    written = []
    for index, (example, explanation) in enumerate(zip(examples, explanations, strict=True)):
        extra = {"id": example.id, "source": example.source}
        if example.conversation_id is not None:
            extra["conversation_id"] = example.conversation_id
        written += write_views(explanation, output_dir / f"example_{index:03d}", extra, cfg.max_heatmap_tokens)
    log.info("Wrote the relevance of %d outputs (%s) to %s", len(examples), explainer.method, output_dir)
    return written
