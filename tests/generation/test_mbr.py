"""Minimum Bayes risk decoding: the consensus choice, checked against a brute-force sacreBLEU computation."""

from functools import partial

import pytest
import sacrebleu
import torch

from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.generation.mbr import UTILITIES, mbr_select
from weaver.tasks import Seq2SeqTask

SAMPLES = [
    "i like to read books about the sea",
    "i like to read books",
    "do you like the sea ?",
    "i like to read books about the sea",
    "the weather is nice today",
    "i like books about the sea",
]


def brute_force_choice(candidates: list[str], metric: str) -> str:
    """Each sample against every other sample (not itself), scored one pair at a time by sacreBLEU's functions."""
    score = {
        "bleu": lambda h, r: sacrebleu.sentence_bleu(h, [r], use_effective_order=True).score,
        "chrf": lambda h, r: sacrebleu.sentence_chrf(h, [r]).score,
    }[metric]
    totals = [sum(score(h, r) for j, r in enumerate(candidates) if j != i) for i, h in enumerate(candidates)]
    return candidates[max(range(len(candidates)), key=lambda i: (totals[i], -i))]


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_mbr_choice_equals_the_brute_force_expected_utility(metric: str) -> None:
    assert mbr_select(SAMPLES, UTILITIES[metric]()) == brute_force_choice(SAMPLES, metric)


def test_mbr_prefers_what_the_samples_share_over_an_outlier() -> None:
    samples = ["the cat sat on the mat", "a cat sat on the mat", "stocks fell sharply", "the cat sat on a mat"]
    assert mbr_select(samples, UTILITIES["bleu"]()) == "the cat sat on the mat"


def test_samples_that_all_agree_give_that_sample() -> None:
    assert mbr_select(["same reply", "same reply"], UTILITIES["bleu"]()) == "same reply"


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_empty_samples_agree_with_each_other_whatever_their_order(metric: str) -> None:
    # sacreBLEU scores an empty text 0 against an empty reference: equal texts still agree fully.
    assert UTILITIES[metric]().sentence_score("", [""]).score == 0
    for samples in (["a b c", "", "", ""], ["", "", "", "a b c"]):
        assert mbr_select(samples, UTILITIES[metric]()) == ""


def test_mbr_needs_sampling_and_a_known_metric() -> None:
    with pytest.raises(ConfigError, match="generation.mbr_num_samples needs do_sample=true"):
        GenerationConfig(mbr_num_samples=8)
    with pytest.raises(ConfigError, match="generation.mbr_metric must be 'bleu' or 'chrf'"):
        GenerationConfig(do_sample=True, mbr_num_samples=8, mbr_metric="rouge")


class RowModel(torch.nn.Module):
    """Returns each row's index as its generated token, and records the sources it was given."""

    decoder_start_token_id = 1

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen = input_ids.clone()
        return torch.arange(input_ids.size(0) * generation_config.outputs_per_source)[:, None]


class IndexTokenizer:
    pad_token_id = 0

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def batch_decode(self, tokens, skip_special_tokens=True):
        return [self.texts[int(row[0])] for row in tokens]


def test_task_draws_samples_per_source_and_returns_each_sources_mbr_choice() -> None:
    first, second = SAMPLES[:3], SAMPLES[3:]
    model = RowModel()
    task = Seq2SeqTask(
        model,
        IndexTokenizer(first + second),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        generation=GenerationConfig(do_sample=True, mbr_num_samples=3, seed=0),
    )
    batch = {"input_ids": torch.tensor([[5, 2], [7, 2]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    texts = task.generate_texts(batch)
    assert model.seen[:, 0].tolist() == [5, 7]  # each source once: the model draws its samples side by side
    scorer = UTILITIES["bleu"]()
    assert texts == [mbr_select(first, scorer), mbr_select(second, scorer)]
