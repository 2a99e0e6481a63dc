"""What an `Explanation` is written as: a source x output heatmap (PNG), a self-contained HTML page that shades the
source by its relevance to the output token under the mouse, and the scores as JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from weaver.explain.explainer import Explanation, top_spans

GAP = "…"  # the heatmap column between two spans of a long source
SPAN_TOKENS = 8  # tokens per span when a long source is shown as its most relevant spans


def shown_columns(explanation: Explanation, max_tokens: int) -> list[int | None]:
    """The source positions the heatmap shows, in order: all of them, or for a longer source its most relevant
    spans of `SPAN_TOKENS` with None between spans that do not touch."""
    length = len(explanation.source_tokens)
    if length <= max_tokens:
        return list(range(length))
    span_tokens = min(SPAN_TOKENS, max_tokens)  # a budget under one span's width shows one narrower span
    spans = sorted(top_spans(explanation.source_scores(), max_tokens // span_tokens, span_tokens, share=0.0))
    columns: list[int | None] = []
    for start, end in spans:
        if columns and columns[-1] != start - 1:
            columns.append(None)
        columns.extend(range(start, end))
    return columns


def heatmap(explanation: Explanation, max_tokens: int = 64) -> Figure:
    """Output tokens down, source tokens across; a long source is cut to its most relevant spans."""
    columns = shown_columns(explanation, max_tokens)
    kept = torch.tensor([c for c in columns if c is not None])
    values = explanation.relevance.index_select(1, kept)
    values = (values.to_dense() if values.is_sparse else values).numpy()
    matrix = np.full((values.shape[0], len(columns)), np.nan, dtype=np.float32)
    matrix[:, [i for i, c in enumerate(columns) if c is not None]] = values
    rows = len(explanation.output_tokens)
    figure = Figure(figsize=(2.5 + 0.22 * len(columns), 2.0 + 0.22 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bound = float(np.nanmax(np.abs(matrix))) if matrix.size and np.isfinite(matrix).any() else 1.0
    if explanation.signed:
        image = axes.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    else:
        image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=bound or 1.0, aspect="auto", interpolation="nearest")
    axes.set_xticks(
        range(len(columns)), [label(explanation.source_tokens[c]) if c is not None else GAP for c in columns]
    )
    axes.tick_params(axis="x", labelrotation=90)
    axes.set_yticks(range(rows), [label(token) for token in explanation.output_tokens])
    axes.set_xlabel(
        "source"
        if len(columns) == len(explanation.source_tokens)
        else f"source: the most relevant spans of {len(explanation.source_tokens)} tokens"
    )
    axes.set_ylabel("output")
    axes.set_title(describe(explanation), fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    figure.tight_layout()
    return figure


def label(token: str) -> str:
    """A tick label: the token without its word-start space; a whitespace token as a visible space."""
    return token.strip() or "␣"


def describe(explanation: Explanation) -> str:
    if explanation.layers is None:
        return explanation.method
    return f"{explanation.method}, layers {explanation.layers}, heads {explanation.heads} (mean)"


def figure_pixels(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8 RGB, as image loggers take it."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def page_data(explanation: Explanation) -> dict[str, Any]:
    """What the HTML page draws from: each output token's nonzero (source position, score) pairs."""
    relevance = explanation.relevance if explanation.relevance.is_sparse else explanation.relevance.to_sparse()
    relevance = relevance.coalesce()
    (rows, columns), values = relevance.indices().tolist(), relevance.values().tolist()
    pairs: list[list[list[float]]] = [[] for _ in explanation.output_tokens]
    for row, column, value in zip(rows, columns, values, strict=True):
        if value:
            pairs[row].append([column, float(f"{value:.4g}")])
    totals = explanation.source_scores()
    return {
        "source": explanation.source_tokens,
        "output": explanation.output_tokens,
        "rows": pairs,
        "totals": [[i, float(f"{v:.4g}")] for i, v in enumerate(totals.tolist()) if v],
        "signed": explanation.signed,
    }


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Relevance: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; line-height: 1.9; }}
.tokens span {{ white-space: pre-wrap; border-radius: 3px; padding: 1px 0; }}
#output span {{ cursor: pointer; border-bottom: 2px solid #ccc; }}
#output span.active {{ border-bottom-color: #c00; }}
.meta {{ color: #555; }}
</style></head><body>
<h1>Relevance</h1>
<p class="meta">{description}. Point at an output token to shade the source by its relevance to that token; click
to keep it. With no token chosen, the source is shaded by its relevance to the whole output.</p>
<h2>Output</h2><div id="output" class="tokens"></div>
<h2>Source</h2><div id="source" class="tokens"></div>
<script>
const DATA = {data};
function fill(id, tokens) {{
  const box = document.getElementById(id);
  return tokens.map(token => {{ const span = document.createElement("span"); span.textContent = token;
    box.appendChild(span); return span; }});
}}
const sourceSpans = fill("source", DATA.source), outputSpans = fill("output", DATA.output);
let pinned = null;
function shade(pairs) {{
  sourceSpans.forEach(span => {{ span.style.background = ""; span.title = ""; }});
  const top = Math.max(1e-12, ...pairs.map(pair => Math.abs(pair[1])));
  for (const [position, score] of pairs) {{
    const alpha = Math.abs(score) / top, colour = DATA.signed && score < 0 ? "33,102,172" : "178,24,43";
    sourceSpans[position].style.background = `rgba(${{colour}},${{alpha.toFixed(3)}})`;
    sourceSpans[position].title = score.toPrecision(3);
  }}
}}
function choose(index) {{
  outputSpans.forEach((span, i) => span.classList.toggle("active", i === index));
  shade(index === null ? DATA.totals : DATA.rows[index]);
}}
outputSpans.forEach((span, i) => {{
  span.addEventListener("mouseenter", () => choose(i));
  span.addEventListener("mouseleave", () => choose(pinned));
  span.addEventListener("click", () => {{ pinned = pinned === i ? null : i; choose(pinned); }});
}});
choose(null);
</script></body></html>
"""


def html_page(explanation: Explanation) -> str:
    """One file with its CSS, script and data inline: it opens anywhere, offline."""
    data = json.dumps(page_data(explanation), ensure_ascii=False).replace("<", "\\u003c")
    title = html.escape(explanation.output_text[:80])
    return PAGE.format(title=title, description=html.escape(describe(explanation)), data=data)


def write_views(
    explanation: Explanation, stem: Path, extra: dict[str, Any], max_heatmap_tokens: int = 64
) -> list[Path]:
    """`<stem>.png`, `<stem>.html` and `<stem>.json` (the scores, with ``extra`` fields such as the source text)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(suffix) for suffix in (".png", ".html", ".json")]
    heatmap(explanation, max_heatmap_tokens).savefig(paths[0])
    paths[1].write_text(html_page(explanation), encoding="utf-8")
    paths[2].write_text(json.dumps({**extra, **explanation.to_dict()}, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
