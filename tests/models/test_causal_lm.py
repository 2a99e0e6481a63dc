"""Decoder-only HF models behind the task interface: tiny random GPT-2 and Llama saved to a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.models.tiny_hf import CAUSAL_FAMILIES, save_tiny_model
from weaver.data import PretrainedTokenizer
from weaver.data.collate import LABEL_PAD, Seq2SeqCollator
from weaver.data.datamodule import ColumnPairs
from weaver.data.packing import PackedCollator
from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.models import CausalLM, build_causal_lm
from weaver.models.pretrained import config_from
from weaver.prompts import PromptTemplate
from weaver.tasks.seq2seq import shift_right

TEMPLATE = "Translate English to German:\n{source}\nGerman:"
SOURCES = ["The package provides a library.", "Hello world", "Documentation files for the package"]
TARGETS = ["Das Paket enthält eine Bibliothek.", "Hallo Welt", "Dokumentation"]


@pytest.fixture(scope="module", params=CAUSAL_FAMILIES)
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(request.param, tmp_path_factory.mktemp("hf") / request.param)


def load(folder: Path, **kwargs: object) -> tuple[CausalLM, object]:
    tokenizer = PretrainedTokenizer(str(folder)).load()
    return build_causal_lm(tokenizer, str(folder), prompt_template=TEMPLATE, **kwargs).eval(), tokenizer


def batch_of(tokenizer: object) -> dict[str, torch.Tensor]:
    """Prompts and completions as the data module lays them out: prompts padded on the left."""
    template = PromptTemplate(TEMPLATE)
    prompts = template.prompts(
        tokenizer, ColumnPairs("en", "de").encode_sources(tokenizer, {"source": SOURCES}, 64), None, 64
    )
    collator = Seq2SeqCollator(tokenizer.pad_token_id, left_pad_sources=True)
    input_ids, attention_mask = collator.sources(prompts)
    labels = collator.pad(template.completions(tokenizer, TARGETS, 32), LABEL_PAD)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def test_masked_prompt_loss_equals_the_loss_of_each_whole_row(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    batch = batch_of(tokenizer)
    decoder_input_ids = shift_right(batch["labels"], model.decoder_start_token_id, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids)
        ours = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=LABEL_PAD, reduction="sum")
        by_hand = torch.tensor(0.0)
        for row in range(len(SOURCES)):  # each row alone, unpadded: -log p(completion | prompt), summed
            prompt = batch["input_ids"][row][batch["attention_mask"][row]]
            completion = batch["labels"][row][batch["labels"][row].ne(LABEL_PAD)]
            full_logits = model.backbone(torch.cat([prompt, completion])[None]).logits[0]
            predicted = full_logits[len(prompt) - 1 : -1].log_softmax(-1)
            by_hand -= predicted.gather(1, completion[:, None]).sum()
    assert logits.shape[:2] == batch["labels"].shape
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_each_example_its_unpacked_logits(family_dir: Path, attention: str) -> None:
    model, tokenizer = load(family_dir)
    model.backbone.set_attn_implementation(attention)
    batch = batch_of(tokenizer)
    examples = [
        {"input_ids": prompt[mask].tolist(), "labels": labels[labels.ne(LABEL_PAD)].tolist()}
        for prompt, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True)
    ]
    packed = PackedCollator(tokenizer.pad_token_id)([examples[:2], examples[2:]])  # the second row padded
    scored = packed["labels"].ne(LABEL_PAD)
    decoder_input_ids = shift_right(batch["labels"], model.decoder_start_token_id, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model.packed_logits(packed["input_ids"], packed["position_ids"], packed["document_ids"], scored)
        unpacked = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids)
    assert torch.equal(packed["labels"][scored], batch["labels"][batch["labels"].ne(LABEL_PAD)])
    torch.testing.assert_close(logits, unpacked[batch["labels"].ne(LABEL_PAD)], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "settings",
    [{"num_beams": 1}, {"num_beams": 3, "no_repeat_ngram_size": 2}],
    ids=["greedy", "beam"],
)
def test_generate_returns_hf_generate_new_tokens(family_dir: Path, settings: dict) -> None:
    model, tokenizer = load(family_dir)
    batch = batch_of(tokenizer)
    config = GenerationConfig(max_new_tokens=6, **settings)
    ours = model.generate(batch["input_ids"], batch["attention_mask"], config)
    theirs = model.backbone.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"].long(),
        generation_config=model.hf_generation_config(config),
    )
    assert torch.equal(ours, theirs[:, batch["input_ids"].size(1) :])


def test_seeded_samples_of_a_prompt_do_not_depend_on_its_batch(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    batch = batch_of(tokenizer)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, top_k=20, seed=3)
    together = model.generate(batch["input_ids"], batch["attention_mask"], config)
    for i, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"].bool(), strict=True)):
        alone = model.generate(ids[mask][None], torch.ones(1, int(mask.sum()), dtype=torch.bool), config)
        assert torch.equal(together[i, : alone.size(1)], alone[0])
        assert together[i, alone.size(1) :].eq(tokenizer.pad_token_id).all()


def test_a_stop_string_of_several_tokens_is_cut_where_it_begins(family_dir: Path) -> None:
    model, tokenizer = load(family_dir, stop_strings=["###"])
    hash_id = tokenizer("#", add_special_tokens=False)["input_ids"][-1]
    words = tokenizer(" The library", add_special_tokens=False)["input_ids"]
    tokens = torch.tensor([[*words, hash_id, hash_id, hash_id, *words], [*words, hash_id, *words, hash_id, hash_id]])
    assert tokenizer.decode(tokens[0]).count("###") == 1 and "###" not in tokenizer.decode(tokens[1])
    pad, cut = tokenizer.pad_token_id, len(words)
    assert model.cut_at_stop(tokens).tolist() == [[*words, *[pad] * (cut + 3)], tokens[1].tolist()]


def test_a_stop_string_ends_the_completion(family_dir: Path) -> None:
    model, tokenizer = load(family_dir, stop_strings=["\n"])
    newline = tokenizer("a\nb", add_special_tokens=False)["input_ids"][1]
    tokens = torch.tensor([[5, 6, newline, 7, 8], [5, 6, 7, 8, 9]])
    pad = tokenizer.pad_token_id
    assert model.cut_at_stop(tokens).tolist() == [[5, 6, pad, pad, pad], [5, 6, 7, 8, 9]]
    batch = batch_of(tokenizer)
    texts = tokenizer.batch_decode(
        model.generate(batch["input_ids"], batch["attention_mask"]), skip_special_tokens=True
    )
    assert not any("\n" in text for text in texts)


def test_the_context_must_hold_prompt_and_completion(family_dir: Path) -> None:
    tokenizer = PretrainedTokenizer(str(family_dir)).load()  # the tiny models have 128 positions
    with pytest.raises(ConfigError, match=r"data.max_source_length=64 \+ \d+ prompt template tokens \+ data.max_"):
        build_causal_lm(
            tokenizer, str(family_dir), prompt_template=TEMPLATE, max_source_length=64, max_target_length=64
        )
    build_causal_lm(tokenizer, str(family_dir), prompt_template=TEMPLATE, max_source_length=32, max_target_length=32)


def test_a_template_without_its_source_is_named(family_dir: Path) -> None:
    tokenizer = PretrainedTokenizer(str(family_dir)).load()
    with pytest.raises(ConfigError, match=r"model.prompt_template='Translate:' must hold \{source\} exactly once"):
        build_causal_lm(tokenizer, str(family_dir), prompt_template="Translate:")


def test_a_tokenizer_without_pad_pads_with_eos(family_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        tokenizer = PretrainedTokenizer(str(family_dir)).load()
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "no pad token" in caplog.text


def test_embeddings_grow_only_with_the_tokenizer(family_dir: Path) -> None:
    plain = PretrainedTokenizer(str(family_dir)).load()
    grown = PretrainedTokenizer(str(family_dir), extra_special_tokens=["<sep>"]).build(None, "", None)
    rows = build_causal_lm(plain, str(family_dir)).backbone.get_input_embeddings().num_embeddings
    grown_rows = build_causal_lm(grown, str(family_dir)).backbone.get_input_embeddings().num_embeddings
    assert (rows, grown_rows) == (len(plain), len(plain) + 1)


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64},
        {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
    ],
    ids=["gpt2", "llama"],
)
def test_from_config_initialises_at_random_for_the_tokenizer(config: dict, tmp_path: Path) -> None:
    tokenizer = PretrainedTokenizer(str(save_tiny_model("llama", tmp_path / "llama"))).load()
    model = build_causal_lm(tokenizer, from_config=config)
    assert model.hf_config.model_type == config["model_type"]
    assert model.backbone.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.backbone.generation_config.eos_token_id == tokenizer.eos_token_id


def test_an_encoder_decoder_is_sent_to_hf_seq2seq(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")  # BART has a decoder-only class too: refused all the same
    tokenizer = PretrainedTokenizer(str(folder)).load()
    with pytest.raises(ConfigError, match="is an encoder-decoder bart model: use model=hf_seq2seq"):
        build_causal_lm(tokenizer, str(folder))
    with pytest.raises(ConfigError, match="model.from_config='t5' is an encoder-decoder t5 model"):
        build_causal_lm(tokenizer, from_config={"model_type": "t5"})


def test_name_or_path_and_from_config_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="Set one of model.name_or_path"):
        build_causal_lm(None, "gpt2", from_config={"model_type": "gpt2"})


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = type("Tokenizer", (), {"pad_token_id": 0, "eos_token_id": 0})()
    with pytest.raises(ConfigError, match="Hub is unreachable.*model.name_or_path at a local folder"):
        build_causal_lm(tokenizer, "gpt2")


def test_memory_is_refused_for_a_decoder_only_model(family_dir: Path) -> None:
    with pytest.raises(ConfigError, match="model.memory: a decoder-only model has no encoder"):
        load(family_dir, memory={"window": 64, "stride": 32})


@pytest.mark.filterwarnings("error::FutureWarning")  # by the method's current name: no deprecation warning
def test_activation_checkpointing_recomputes_layers_with_the_same_gradients(family_dir: Path) -> None:
    grads = []
    for checkpointing in (False, True):
        model, tokenizer = load(family_dir, activation_checkpointing=checkpointing)
        batch = batch_of(tokenizer)
        decoder_input_ids = shift_right(batch["labels"], model.decoder_start_token_id, tokenizer.pad_token_id)
        torch.manual_seed(0)
        model.train()(batch["input_ids"], batch["attention_mask"], decoder_input_ids).logsumexp(-1).mean().backward()
        grads.append(model.backbone.get_input_embeddings().weight.grad)
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.backbone.modules())
    torch.testing.assert_close(grads[0], grads[1])


def test_a_misspelt_model_type_is_named_with_the_closest_ones() -> None:
    with pytest.raises(ConfigError) as error:
        config_from({"model_type": "gtp2", "n_layer": 1}, trust_remote_code=False)
    assert str(error.value).startswith("model.from_config.model_type='gtp2' is no transformers model type (did ")
    assert "gpt2" in str(error.value) and len(str(error.value)) < 200
