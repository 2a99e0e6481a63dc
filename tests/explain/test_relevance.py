"""`Explainer` on a tiny native model: recall kept sparse, gradient attributions that add up, long sources cut to
their most relevant spans in the heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from tests.models.tiny_hf import fast_tokenizer
from weaver.config import pretrained_path
from weaver.data import PretrainedTokenizer
from weaver.errors import ConfigError
from weaver.explain import Explainer, heatmap, write_views
from weaver.explain.explainer import Explanation, token_labels, top_spans
from weaver.generation import GenerationConfig
from weaver.models import WeaverModel, build_weaver

GREEDY = GenerationConfig(max_new_tokens=5, num_beams=1)
TEXTS = ["A library for reading PNG images", "Python tools"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return fast_tokenizer("bart")


def tiny_model(tokenizer: PreTrainedTokenizerFast, memory: dict | None = None) -> WeaverModel:
    torch.manual_seed(0)
    sizes = dict(d_model=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64, max_positions=64)
    return build_weaver(tokenizer=tokenizer, memory=memory, **sizes).eval()


def encoded(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].bool()}


def test_recall_scores_are_sparse_and_point_at_the_fetched_entries(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_model(tokenizer, memory={"window": 8, "stride": 4, "top_k": 3})
    explanation = Explainer(model, tokenizer, GREEDY)(encoded(tokenizer, TEXTS))[0]
    assert explanation.method == "recall" and explanation.relevance.is_sparse
    indices, weights = explanation.recalled.indices, explanation.recalled.weights
    outputs = len(explanation.output_tokens)
    assert indices.shape == weights.shape == (2, 2, outputs, 3)  # layers, heads, output steps, top_k
    relevance = explanation.relevance.coalesce()
    for step in range(outputs):
        columns = set(relevance.indices()[1][relevance.indices()[0] == step].tolist())
        assert columns == set(indices[:, :, step].flatten().tolist())
    torch.testing.assert_close(torch.sparse.sum(relevance, 1).to_dense(), torch.ones(outputs))
    scores = explanation.to_dict()
    assert scores["relevance"]["format"] == "coo" and len(scores["relevance"]["values"]) <= 2 * 2 * 3 * outputs
    assert torch.tensor(scores["recall"]["indices"]).shape == (2, 2, outputs, 3)


def test_integrated_gradients_add_up_to_the_change_in_log_probability(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_model(tokenizer)
    batch = encoded(tokenizer, TEXTS[:1])
    explainer = Explainer(model, tokenizer, GREEDY, method="integrated_gradients", integration_steps=24)
    explanation = explainer(batch)[0]
    output = explainer.trimmed(model.generate(batch["input_ids"], batch["attention_mask"], GREEDY)[0].tolist())
    decoder_ids = explainer.teacher_forcing_inputs([output])

    def log_probs(source_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(source_ids, batch["attention_mask"], decoder_ids).log_softmax(-1)
        return logits[0].gather(-1, torch.tensor(output)[:, None]).squeeze(-1)

    change = log_probs(batch["input_ids"]) - log_probs(torch.full_like(batch["input_ids"], tokenizer.pad_token_id))
    torch.testing.assert_close(explanation.relevance.sum(1), change, atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients"])
def test_gradients_are_taken_through_one_encoder_window_and_refused_for_a_source_read_in_several(method: str) -> None:
    tokenizer = fast_tokenizer("bart")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<doc>"]})
    model = tiny_model(tokenizer, memory={"window": 32, "stride": 16, "top_k": 4, "segment_token": "<doc>"})
    explainer = Explainer(model, tokenizer, GREEDY, method=method, integration_steps=4)
    one_window = explainer(encoded(tokenizer, ["zlib compression library"]))[0]
    assert one_window.relevance.shape == (len(one_window.output_tokens), len(one_window.source_tokens))
    with pytest.raises(ConfigError, match=r"in 2 encoder windows \(model.memory.window=32, a new one at each "):
        explainer(encoded(tokenizer, ["<doc> zlib <doc> compression library"]))  # shorter than a window, two segments
    # What precedes the first segment token (here the start token, in the recall set a space) is read with it.
    one_segment = explainer(encoded(tokenizer, [" <doc> zlib compression library"]))[0]
    assert one_segment.relevance.shape == (len(one_segment.output_tokens), len(one_segment.source_tokens))


def test_a_long_source_is_shown_as_its_most_relevant_spans(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    model = tiny_model(tokenizer, memory={"window": 16, "stride": 8, "top_k": 4})
    long_text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    explanation = Explainer(model, tokenizer, GREEDY)(encoded(tokenizer, [long_text]))[0]
    assert len(explanation.source_tokens) > 400
    columns = len(heatmap(explanation, max_tokens=32).axes[0].get_xticks())
    assert 16 <= columns <= 32 + 3  # spans of 8 tokens, with a gap column between spans that do not touch
    assert len(heatmap(explanation, max_tokens=4).axes[0].get_xticks()) == 4  # a budget under one span: one span
    png, page, scores = write_views(explanation, tmp_path / "long", {"source": long_text}, max_heatmap_tokens=32)
    assert json.loads(scores.read_text())["relevance"]["format"] == "coo"
    assert png.stat().st_size < 500_000 and page.stat().st_size < 200_000


def test_labels_of_tokens_that_split_a_character_read_as_the_text() -> None:
    """Byte-level BPE splits 日, ï or an emoji over tokens that alone decode to U+FFFD."""
    tokenizer = PretrainedTokenizer(pretrained_path("weaver_small_pretrained")).load()
    text = "日本語 ünïcödé 🎉 straße"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "\ufffd" in "".join(tokenizer.decode([i]) for i in ids)  # what labels of one token each would show
    labels = token_labels(tokenizer, ids)
    assert len(labels) == len(ids) and "".join(labels).strip() == text


def test_an_explanations_spans_are_whole_words_without_special_tokens() -> None:
    tokens = [" command", "-", "line", " tools", " for", " SSH", "</s>"]
    scores = torch.tensor([[0.0, 0.05, 0.6, 0.0, 0.0, 0.05, 0.3]])  # the peaks: "line" and "</s>"
    explanation = Explanation("cross_attention", tokens, [" x"], "x", scores, source_special=[False] * 6 + [True])
    assert [(span.start, span.end, span.text) for span in explanation.spans(count=2, share=0.05)] == [
        (0, 3, "command-line"),  # "line" and the "-" beside it, widened to the word
        (5, 6, "SSH"),  # the span around </s>, less </s>
    ]
    # An empty output (its EOS alone) draws on nothing.
    assert Explanation("cross_attention", tokens, ["</s>"], "", scores).spans() == []
    # Two peaks in one word make one span, and no span runs across special tokens.
    tokens = [" Strat", "ford", "-", "upon", "-", "Avon", " is", " fine", "<sep>", "<speaker2>", "how", " so"]
    scores = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.3, 0.2, 0.2, 0.3, 0.0]])
    special = [False] * 8 + [True, True] + [False] * 2
    explanation = Explanation("cross_attention", tokens, [" x"], "x", scores, source_special=special)
    assert [span.text for span in explanation.spans(count=3, share=0.0)] == ["Stratford-upon-Avon is fine", "how so"]


def test_spans_grow_from_the_peaks_while_neighbours_score_high() -> None:
    scores = torch.tensor([0.0, 0.1, 0.9, 0.5, 0.05, 0.0, 0.7, 0.0])
    assert top_spans(scores, 2, max_tokens=4, share=0.25) == [(2, 4), (6, 7)]
    assert top_spans(scores, 1, max_tokens=3, share=0.0) == [(1, 4)]  # towards the higher neighbour
    # A token peaks only where allowed (a line break alone is no span), though spans may take it in.
    visible = [True, True, False, True, True, True, True, True]
    assert top_spans(scores, 2, max_tokens=4, share=0.25, peaks=visible) == [(6, 7), (2, 4)]
