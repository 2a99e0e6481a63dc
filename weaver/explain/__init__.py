"""Relevance: which source tokens each output token relied on (cross-attention, recall, gradient attribution), and
the views of it (heatmap, HTML page, JSON)."""

from weaver.explain.explainer import METHODS, Explainer, Explanation, Span, check_method
from weaver.explain.views import figure_pixels, heatmap, html_page, write_views

__all__ = [
    "METHODS",
    "Explainer",
    "Explanation",
    "Span",
    "check_method",
    "figure_pixels",
    "heatmap",
    "html_page",
    "write_views",
]
