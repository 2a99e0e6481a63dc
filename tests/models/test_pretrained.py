"""HuggingFace backbones behind the task interface: tiny random T5, BART and Marian saved to a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from tests.models.tiny_hf import FAMILIES, save_tiny_model
from weaver.data import PretrainedTokenizer
from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.models import PretrainedSeq2Seq, build_pretrained_seq2seq, hf_memory

TEXTS = ["The package provides a library.", "Hello world"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(request.param, tmp_path_factory.mktemp("hf") / request.param)  # named by family


def load(folder: Path, **kwargs: object) -> tuple[PretrainedSeq2Seq, object]:
    tokenizer = PretrainedTokenizer(str(folder)).load()
    return build_pretrained_seq2seq(tokenizer, str(folder), **kwargs).eval(), tokenizer


def test_forward_gives_logits_for_every_target_position(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    decoder_input_ids = torch.full((2, 5), model.decoder_start_token_id)
    logits = model(batch["input_ids"], batch["attention_mask"].bool(), decoder_input_ids)
    assert logits.shape == (2, 5, len(tokenizer)) and logits.dtype == torch.float32


def test_training_flops_estimate_is_close_to_the_counted_ones(family_dir: Path) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model, tokenizer = load(family_dir)
    source, target = torch.randint(5, 100, (4, 12)), torch.randint(5, 100, (4, 9))
    with FlopCounterMode(display=False) as counter:
        model(source, torch.ones_like(source, dtype=torch.bool), target).sum().backward()
    assert model.training_flops(4, 12, 9) == pytest.approx(counter.get_total_flops(), rel=0.1)


def test_decoder_start_is_the_family_convention(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    expected = {"t5": tokenizer.pad_token_id, "bart": tokenizer.eos_token_id, "marian": tokenizer.pad_token_id}
    assert model.decoder_start_token_id == expected[family_dir.name]


@pytest.mark.parametrize("settings", [{"num_beams": 1}, {"num_beams": 3, "no_repeat_ngram_size": 2}])
def test_generate_matches_hf_generate_without_the_start_token(family_dir: Path, settings: dict) -> None:
    model, tokenizer = load(family_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    config = GenerationConfig(max_new_tokens=6, **settings)
    ours = model.generate(batch["input_ids"], batch["attention_mask"].bool(), config)
    theirs = model.backbone.generate(**batch, generation_config=model.hf_generation_config(config))
    assert theirs[:, 0].eq(model.decoder_start_token_id).all()
    assert torch.equal(ours, theirs[:, 1:])


def test_decoding_settings_saved_with_a_backbone_do_not_apply_beside_weavers(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")
    plain, tokenizer = load(folder)
    saved = transformers.GenerationConfig.from_pretrained(folder)
    saved.update(repetition_penalty=5.0, min_length=6, num_beams=4, early_stopping=True, no_repeat_ngram_size=3)
    saved.save_pretrained(folder)
    model, _ = load(folder)
    config = GenerationConfig(max_new_tokens=8, num_beams=2)
    hf_config = model.hf_generation_config(config)
    assert hf_config.repetition_penalty in (None, 1.0) and not hf_config.min_length and not hf_config.early_stopping
    assert hf_config.no_repeat_ngram_size == 0 and hf_config.eos_token_id == saved.eos_token_id
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    args = (batch["input_ids"], batch["attention_mask"].bool(), config)
    assert torch.equal(model.generate(*args), plain.generate(*args))


@pytest.mark.parametrize("samples", [0, 3])
def test_seeded_samples_of_a_source_do_not_depend_on_its_batch(family_dir: Path, samples: int) -> None:
    model, tokenizer = load(family_dir)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, top_k=50, seed=3, mbr_num_samples=samples)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    together = model.generate(batch["input_ids"], batch["attention_mask"].bool(), config)
    assert torch.equal(together, model.generate(batch["input_ids"], batch["attention_mask"].bool(), config))
    per_source = config.outputs_per_source
    for i, text in enumerate(TEXTS):
        alone = tokenizer([text], return_tensors="pt")
        mine = together[i * per_source : (i + 1) * per_source]
        drawn = model.generate(alone["input_ids"], alone["attention_mask"].bool(), config)
        assert (
            torch.equal(mine[:, : drawn.size(1)], drawn) and mine[:, drawn.size(1) :].eq(tokenizer.pad_token_id).all()
        )


def test_learned_positions_bound_the_source_length(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")  # 128 positions
    tokenizer = PretrainedTokenizer(str(folder)).load()
    with pytest.raises(ConfigError, match=r"data.max_source_length=200 exceeds the 128 positions"):
        build_pretrained_seq2seq(tokenizer, str(folder), max_source_length=200)
    model = build_pretrained_seq2seq(tokenizer, str(folder), max_source_length=128, max_target_length=64)
    assert model.decoder_positions == 128  # what bounds generation.max_new_tokens
    assert load(save_tiny_model("t5", tmp_path / "t5"))[0].decoder_positions is None  # relative positions


def test_embeddings_grow_only_with_the_tokenizer(tmp_path: Path) -> None:
    folder = save_tiny_model("t5", tmp_path / "t5")
    plain = PretrainedTokenizer(str(folder)).load()
    grown = PretrainedTokenizer(str(folder), extra_special_tokens=["<speaker1>", "<speaker2>"]).build(None, "", None)
    rows = build_pretrained_seq2seq(plain, str(folder)).backbone.get_input_embeddings().num_embeddings
    assert rows == len(plain)
    grown_rows = build_pretrained_seq2seq(grown, str(folder)).backbone.get_input_embeddings().num_embeddings
    assert grown_rows == len(plain) + 2 == len(grown)


def test_forced_bos_token_must_be_in_the_vocabulary(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")
    tokenizer = PretrainedTokenizer(str(folder)).load()
    model = build_pretrained_seq2seq(tokenizer, str(folder), forced_bos_token="<s>")
    assert model.hf_generation_config(GenerationConfig()).forced_bos_token_id == tokenizer.bos_token_id
    with pytest.raises(ConfigError, match="model.forced_bos_token='de_DE' is not a token"):
        build_pretrained_seq2seq(tokenizer, str(folder), forced_bos_token="de_DE")


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="Hub is unreachable.*model.name_or_path at a local folder"):
        build_pretrained_seq2seq(None, "t5-small")


def test_a_decoder_only_model_is_sent_to_hf_causal_lm(tmp_path: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="is a decoder-only gpt2 model: use model=hf_causal_lm"):
        build_pretrained_seq2seq(None, str(tmp_path))


def long_batch(tokenizer: object, length: int = 60) -> dict[str, torch.Tensor]:
    """Two right-padded sources, the first ``length`` tokens long: several windows of 32."""
    words = " ".join(f"library {i} provides" for i in range(length))
    batch = tokenizer([words, "Hello world"], padding=True, return_tensors="pt", truncation=True, max_length=length)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].bool()}


def test_recall_covering_the_memory_equals_the_backbone_in_one_pass(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    recalling, _ = load(family_dir, memory={"window": 64, "stride": 32, "top_k": 64}, max_source_length=64)
    batch = long_batch(tokenizer)
    target = torch.randint(5, 100, (2, 7))
    expected = model(batch["input_ids"], batch["attention_mask"], target)
    torch.testing.assert_close(recalling(batch["input_ids"], batch["attention_mask"], target), expected)
    narrow, _ = load(family_dir, memory={"window": 64, "stride": 32, "top_k": 2}, max_source_length=64)
    assert not torch.allclose(narrow(batch["input_ids"], batch["attention_mask"], target), expected, atol=1e-3)
    for settings in ({"num_beams": 1}, {"num_beams": 3}, {"do_sample": True, "seed": 3}):
        config = GenerationConfig(max_new_tokens=8, **settings)
        assert torch.equal(
            recalling.generate(**batch, generation_config=config), model.generate(**batch, generation_config=config)
        )


@pytest.mark.parametrize("settings", [{"num_beams": 3}, {"do_sample": True, "seed": 0, "mbr_num_samples": 3}])
def test_a_sources_beams_or_samples_share_its_memory(
    family_dir: Path, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    recalling, tokenizer = load(family_dir, memory={"window": 32, "stride": 16, "top_k": 8}, max_source_length=64)
    memory_rows = []
    recall = hf_memory.recall_attention

    def recording(query: torch.Tensor, key: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        memory_rows.append(key.size(0))
        return recall(query, key, *args, **kwargs)

    monkeypatch.setattr(hf_memory, "recall_attention", recording)
    config = GenerationConfig(max_new_tokens=4, **settings)
    output = recalling.generate(**long_batch(tokenizer), generation_config=config)
    assert output.size(0) == 2 * config.outputs_per_source  # MBR's samples, side by side
    assert memory_rows and set(memory_rows) == {2}  # one row of keys and values per source, not per beam or sample


def test_mbr_samples_come_from_one_encoding_of_each_source(family_dir: Path) -> None:
    model, tokenizer = load(family_dir)
    encoded_rows = []
    encoder = model.backbone.get_encoder()
    handle = encoder.register_forward_hook(
        lambda module, args, kwargs, output: encoded_rows.append(len(output[0])), with_kwargs=True
    )
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    config = GenerationConfig(max_new_tokens=5, do_sample=True, seed=0, mbr_num_samples=4)
    output = model.generate(batch["input_ids"], batch["attention_mask"].bool(), config)
    handle.remove()
    assert encoded_rows == [2] and output.size(0) == 8


def test_generating_with_memory_encodes_the_windows_without_autograd(family_dir: Path) -> None:
    recalling, tokenizer = load(family_dir, memory={"window": 32, "stride": 16, "top_k": 8}, max_source_length=64)
    grad_enabled = []
    encoder = recalling.backbone.get_encoder()
    handle = encoder.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    recalling.generate(**long_batch(tokenizer), generation_config=GenerationConfig(max_new_tokens=2))
    handle.remove()
    assert grad_enabled and not any(grad_enabled)


def test_recall_reads_sources_past_the_learned_positions_in_windows(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")  # 128 positions
    with pytest.raises(ConfigError, match="max_source_length=400 exceeds the 128 positions"):
        load(folder, max_source_length=400)
    with pytest.raises(ConfigError, match="model.memory.window=256 exceeds the model's max_position_embeddings=128"):
        load(folder, max_source_length=400, memory={"window": 256, "stride": 128})
    with pytest.raises(ConfigError, match="model.memory.fold_keys=true is for the native model"):
        load(folder, max_source_length=400, memory={"window": 64, "stride": 32, "fold_keys": True})
    model, tokenizer = load(folder, max_source_length=400, memory={"window": 64, "stride": 32, "top_k": 8})
    batch = long_batch(tokenizer, 400)
    assert batch["input_ids"].size(1) == 400
    tokens = model.generate(**batch, generation_config=GenerationConfig(max_new_tokens=5, num_beams=2))
    assert tokens.shape[0] == 2
    logits = model.train()(batch["input_ids"], batch["attention_mask"], torch.randint(5, 100, (2, 4)))
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def checkpointed_layers(part: torch.nn.Module) -> set[bool]:
    return {module.gradient_checkpointing for module in part.modules() if hasattr(module, "gradient_checkpointing")}


def test_activation_checkpointing_with_memory_recomputes_whole_windows_with_the_same_gradients(tmp_path: Path) -> None:
    folder = save_tiny_model("bart", tmp_path / "bart")
    memory = {"window": 32, "stride": 16, "top_k": 8}
    grads = []
    for checkpointing in (False, True):
        model, tokenizer = load(folder, max_source_length=400, memory=memory, activation_checkpointing=checkpointing)
        batch = long_batch(tokenizer, 100)
        torch.manual_seed(0)  # dropout draws the same masks; recomputation replays them
        model.train()(batch["input_ids"], batch["attention_mask"], torch.arange(5, 11)[None].repeat(2, 1)).logsumexp(
            -1
        ).mean().backward()
        grads.append(model.backbone.get_input_embeddings().weight.grad)
    assert model.checkpoint_windows
    assert checkpointed_layers(model.backbone.get_encoder()) == {False}  # windows are, instead
    assert checkpointed_layers(model.backbone.get_decoder()) == {True}
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "mvp"}, "the mvp model's attention cannot be replaced by recall"),
        ({"model_type": "fsmt", "langs": ["en", "de"]}, "the fsmt model's attention cannot be replaced by recall"),
        (
            {"model_type": "switch_transformers", "d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2},
            "the switch_transformers model is a mixture of experts",
        ),
    ],
)
def test_memory_on_a_backbone_recall_cannot_reach_is_refused(config: dict, message: str, tmp_path: Path) -> None:
    tokenizer = PretrainedTokenizer(str(save_tiny_model("bart", tmp_path / "bart"))).load()
    small = {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2}
    small |= {"decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_heads": 2}
    memory = {"window": 32, "stride": 16, "top_k": 4}
    with pytest.raises(ConfigError, match=f"model.memory: {message}"):
        build_pretrained_seq2seq(tokenizer, from_config=small | config, max_source_length=64, memory=memory)
