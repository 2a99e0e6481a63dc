"""Where a recall-set model's recall goes: the share of its recall weight that falls inside the queried description.

For each test example of the recall set (`data=recall_set`), the checkpoint generates its synopsis, and for every
output token, decoder layer and head, the `top_k` memory entries it fetched and their attention weights are read
(`weaver.explain.Explainer`, method `recall`). Each example's source splits into the query (the package name before
the first `<doc>`), the queried document (from its `<doc>` to the next one, its name header included) and the other
documents; the script reports the mean share of recall weight in each, beside the queried document's share of the
source's tokens (what recall spread evenly would give it), and how often the most weighted entry lies in the queried
document. With `--views` it also writes the first example's heatmap, HTML view and scores (`explain.py`'s files).
For a model trained with `task.relevance_tagging_weight`, it reports where the encoder's relevance probe points as
well: its scores softmaxed over the source (the query left out, as in training), their mass inside the queried
document and how often the top-scored token lies there.

    python -m experiments.long_inputs.recall_mass --ckpt <recall_set_long's best .ckpt> --documents 40 160 \
        --output <run>/recall_mass.jsonl [--views <run>/views]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from weaver.checkpoints import RestoredRun, restore_run
from weaver.data.tokenizer import GivenTokenizer
from weaver.explain import Explainer, write_views
from weaver.explain.attention import read_source_states
from weaver.explain.explainer import Explanation
from weaver.inference import Example, Predictor
from weaver.instantiate import build

# Sources are never cut: memory reads any length, and a cut could drop the queried description.
MAX_SOURCE_TOKENS = 1 << 20


def document_spans(explanation: Explanation, document_token: str) -> list[tuple[int, int]]:
    """(start, end) token positions of each document, its marker included; the query comes before the first."""
    starts = [i for i, token in enumerate(explanation.source_tokens) if token.strip() == document_token]
    return list(zip(starts, [*starts[1:], len(explanation.source_tokens)], strict=True))


def shares(explanation: Explanation, queried: tuple[int, int], query_end: int) -> dict[str, Any]:
    """Mean over output tokens, layers and heads of the recall weight inside the queried document and the query, and
    the fraction of (output token, layer, head) whose most weighted entry lies in the queried document; and the
    first of these for each head index on its own (over layers and output tokens), since a relevance loss may
    supervise some heads only (`task.relevance_heads`)."""
    recalled = explanation.recalled
    weights, positions = recalled.weights.float(), recalled.indices  # (L, H, T, K)
    inside = (positions >= queried[0]) & (positions < queried[1])
    total = weights.sum(-1).clamp_min(1e-12)
    best = positions.gather(-1, weights.argmax(-1, keepdim=True)).squeeze(-1)
    queried_share = (weights * inside).sum(-1) / total  # (L, H, T)
    return {
        "queried": float(queried_share.mean()),
        "queried_by_head": queried_share.mean((0, 2)).tolist(),
        "query": float(((weights * (positions < query_end)).sum(-1) / total).mean()),
        "top_entry_in_queried": float(((best >= queried[0]) & (best < queried[1])).float().mean()),
        "queried_token_share": (queried[1] - queried[0]) / len(explanation.source_tokens),
    }


@torch.no_grad()
def probe_shares(run: RestoredRun, rows: Any) -> dict[str, float]:
    """Mean over ``rows`` (tokenized test rows, their `relevant_spans` and `ignored_spans` marked) of the relevance
    probe's softmax mass inside the queried document, and how often its top-scored token lies there."""
    task, masses, tops = run.task, [], []
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with read_source_states(task.model) as states:
            task.model(ids, torch.ones_like(ids), torch.tensor([[task.model.decoder_start_token_id]]))
        scores = task.relevance_probe(states[0])[0, :, 0].float()
        for start, end in row["ignored_spans"]:
            scores[start:end] = float("-inf")
        (start, end), *_ = row["relevant_spans"]
        masses.append(float(scores.softmax(-1)[start:end].sum()))
        tops.append(start <= int(scores.argmax()) < end)
    return {"probe_queried": statistics.mean(masses), "probe_top_in_queried": statistics.mean(tops)}


def measure(ckpt: str, documents: int, examples: int, batch_size: int, views: Path | None) -> dict[str, Any]:
    overrides = {
        "data.pair_builder.eval_num_documents": documents,
        "data.pair_builder.eval_max_examples": examples,
        "data.max_source_length": MAX_SOURCE_TOKENS,
    }
    run = restore_run(ckpt, overrides)
    datamodule = build(run.cfg.data, "data", tokenizer=GivenTokenizer(run.tokenizer))
    test = datamodule.pairs()["test"]
    explainer = Explainer(run.task.model, run.tokenizer, run.task.generation, method="recall")
    predictor = Predictor(run, batch_size=batch_size)
    explanations = predictor.map_batches([Example(row["source"], row["target"]) for row in test], explainer)
    document_token = run.cfg.data.pair_builder.document_token
    rows = []
    for row, explanation in zip(test, explanations, strict=True):
        spans = document_spans(explanation, document_token)
        rows.append(shares(explanation, spans[row["position"]], spans[0][0]))
    if views is not None:
        first = test[0]
        extra = {"id": 0, "source": first["source"], "reference": first["target"], "position": first["position"]}
        write_views(explanations[0], views / f"recall_set_{documents}_documents", extra)
    summary = {key: statistics.mean(row[key] for row in rows) for key in rows[0] if key != "queried_by_head"}
    by_head = zip(*(row["queried_by_head"] for row in rows), strict=True)
    summary["queried_by_head"] = [statistics.mean(head) for head in by_head]
    if run.task.relevance_probe is not None:
        summary.update(probe_shares(run, datamodule.tokenized_splits()["test"]))
    return {
        "documents": documents,
        "examples": len(rows),
        "source_tokens": statistics.mean(len(e.source_tokens) for e in explanations),
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--documents", type=int, nargs="+", default=[40])
    parser.add_argument("--examples", type=int, default=100, help="test rows queried (the first ones)")
    parser.add_argument("--batch-size", type=int, default=4)
    # No defaults that point into the recorded results: a new measurement never appends to or overwrites them.
    parser.add_argument("--output", type=Path, required=True, help="JSONL file the results are appended to")
    parser.add_argument("--views", type=Path, help="where the first example's views go (none written without it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    for documents in args.documents:
        result = measure(args.ckpt, documents, args.examples, args.batch_size, args.views)
        print(json.dumps(result))
        with args.output.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
