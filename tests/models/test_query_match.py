"""Query-match features: which source tokens repeat the query, and how the model adds them to its embeddings."""

import pytest
import torch

from tests.models.test_weaver_model import padded_batch, tiny_model
from weaver.errors import ConfigError
from weaver.models import LoRA, WeaverModel, load_weaver
from weaver.models.memory import MemoryConfig, encode_in_windows
from weaver.models.query_match import QueryMatchConfig, query_match_from_settings, query_matches

QUERY_END = 2  # never among padded_batch's random tokens


def marks(ids: list[int], ngram: int = 2) -> list[int]:
    tensor = torch.tensor([ids])
    return query_matches(tensor, torch.ones_like(tensor), QueryMatchConfig(QUERY_END, ngram))[0].int().tolist()


def test_tokens_inside_an_occurrence_of_a_query_ngram_are_marked():
    # Query 7 8 9; the body repeats the bigrams 7 8 and 8 9, and has 7 and 9 apart and 9 8 reversed.
    source = [7, 8, 9, QUERY_END, 5, 7, 8, 5, 9, 8, 5, 7, 5, 8, 9, 9]
    assert marks(source) == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert marks(source, ngram=3) == [0] * len(source)
    assert marks([*source, 7, 8, 9], ngram=3) == [0] * len(source) + [1, 1, 1]
    # ngram=1: every body token that occurs in the query (DrQA's exact match).
    assert marks(source, ngram=1) == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1]


def test_sources_without_a_query_and_padding_are_never_marked():
    assert marks([7, 8, 5, 7, 8]) == [0] * 5
    assert marks([7, QUERY_END, 7, 7]) == [0] * 4  # a one-token query has no bigram
    ids = torch.tensor([[7, 8, QUERY_END, 7, 8, 0, 0], [7, 8, QUERY_END, 7, 8, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    found = query_matches(ids, mask, QueryMatchConfig(QUERY_END, 2))
    assert found.int().tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1]]


@pytest.mark.parametrize(("window", "stride", "ngram"), [(32, 16, 2), (8, 6, 2), (9, 5, 3), (12, 8, 3)])
def test_windows_mark_every_kept_token_as_the_whole_source_does(window, stride, ngram):
    """Each window starts with the query and is marked on its own; the memory keeps the marks one pass gives, down
    to the smallest overlap the config allows."""
    ids, mask = padded_batch([300, 180], seed=3)
    ids[:, 6] = QUERY_END  # a 6-token query, repeated in bigrams and trigrams across the source
    for row, start in ((0, 40), (0, 129), (0, 250), (1, 60), (1, 175), *((0, s) for s in range(100, 120, 4))):
        ids[row, start : start + 3] = ids[row, 1:4]
    config = QueryMatchConfig(QUERY_END, ngram)
    memory = MemoryConfig(window=window, stride=stride, prefix_token_id=QUERY_END)
    config.check_windows(memory)
    windowed = encode_in_windows(lambda i, m: query_matches(i, m, config)[..., None].float(), ids, mask, memory)
    whole = query_matches(ids, mask, config)
    assert whole.sum() >= 10
    torch.testing.assert_close(windowed[..., 0], whole.float() * mask)


def test_marked_tokens_get_the_vector_and_it_learns():
    model = tiny_model(query_match={"query_token_id": QUERY_END, "ngram": 2})
    without = tiny_model()
    ids, mask = padded_batch([20])
    ids[0, 3], ids[0, 10:13] = QUERY_END, ids[0, :3]
    added = model.query_match(ids, mask)
    assert added[0, 10:13].eq(model.query_match.vector).all() and added[0, :10].eq(0).all()
    # The same seed gives both models the same token embeddings.
    torch.testing.assert_close(model._embed(ids, added=added), without._embed(ids) + added)
    model.train().encode(ids, mask).sum().backward()
    assert model.query_match.vector.grad.abs().sum() > 0


def test_a_saved_model_given_query_match_starts_out_computing_what_it_did(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    matching = load_weaver(str(tmp_path), query_match={"query_token_id": QUERY_END}).eval()
    assert matching.query_match.vector.eq(0).all()
    ids, mask = padded_batch([30, 18])
    ids[:, 4], ids[:, 12:16] = QUERY_END, ids[:, :4]
    torch.testing.assert_close(matching.encode(ids, mask), model.encode(ids, mask))
    # Exported with its settings and vector.
    matching.query_match.vector.data.normal_()
    matching.save_pretrained(tmp_path / "matching")
    restored = WeaverModel.from_pretrained(tmp_path / "matching")
    assert restored.config.query_match == QueryMatchConfig(QUERY_END, 2)
    torch.testing.assert_close(restored.encode(ids, mask), matching.encode(ids, mask))


def test_modules_a_fine_tune_adds_train_in_full_beside_adapters(tmp_path):
    """Copy attention and the query-match vector start untrained: frozen beside LoRA, they would stay so."""
    tiny_model().save_pretrained(tmp_path)
    model = load_weaver(str(tmp_path), copy_attention=True, query_match={"query_token_id": QUERY_END})
    adapted = LoRA()(model)
    trainable = {name for name, parameter in adapted.named_parameters() if parameter.requires_grad}
    assert any(".copy." in name for name in trainable) and any(".query_match." in name for name in trainable)
    assert all("lora_" in name or ".copy." in name or ".query_match." in name for name in trainable)
    kept = LoRA()(load_weaver(str(tmp_path)))  # nothing added: the adapters alone train
    assert all("lora_" in name for name, parameter in kept.named_parameters() if parameter.requires_grad)


class Tokens:
    unk_token_id = 1

    def convert_tokens_to_ids(self, token: str) -> int:
        return {"<query>": 7}.get(token, 1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"query_token": "<query>", "ngram": 0}, "model.query_match.ngram must be a positive integer"),
        ({"query_token": "<ask>"}, r"model.query_match.query_token='<ask>' is not a token of the tokenizer"),
        ({"ngram": 2}, "model.query_match needs query_token"),
        ({"query_token": "<query>", "n": 2}, r"model.query_match: unknown key\(s\) \['n'\]"),
    ],
)
def test_bad_query_match_settings_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        query_match_from_settings(settings, Tokens())


def test_windows_overlapping_too_little_for_the_ngram_are_refused():
    with pytest.raises(ConfigError, match=r"ngram=3 needs encoder windows that overlap by 4 tokens or more; "):
        tiny_model(
            query_match={"query_token_id": QUERY_END, "ngram": 3},
            memory={"window": 16, "stride": 13, "prefix_token_id": QUERY_END},
        )


@pytest.mark.parametrize("prefix_token_id", [None, QUERY_END + 1])
def test_windows_not_starting_with_the_query_are_refused(prefix_token_id):
    """Past the first window such windows would hold no query, so their repeats of it would go unmarked."""
    with pytest.raises(ConfigError, match=r"needs model.memory.prefix_token to be the query token \(id 2, got "):
        tiny_model(
            query_match={"query_token_id": QUERY_END},
            memory={"window": 16, "stride": 8, "prefix_token_id": prefix_token_id},
        )
