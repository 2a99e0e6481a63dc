"""Every `peft=` option on tiny HF encoder-decoders and decoder-only models: few trainable parameters, and they
train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from tests.conftest import SHORT_TRAINING, compose_config, tiny_run_config
from tests.models.tiny_hf import save_tiny_model
from weaver.cli.train import train
from weaver.data import PretrainedTokenizer
from weaver.errors import ConfigError
from weaver.instantiate import build
from weaver.models import (
    IA3,
    AdaLoRA,
    BottleneckAdapter,
    LoRA,
    PrefixTuning,
    PromptTuning,
    build_causal_lm,
    build_pretrained_seq2seq,
    build_weaver,
    can_merge,
    merge_adapters,
    peft_model_of,
)
from weaver.models.adapters import allocate_ranks, load_rank_allocator_state, rank_allocator_state
from weaver.tasks.seq2seq import shift_right

METHODS = {
    "lora": lambda: LoRA(r=4),
    "adalora": lambda: AdaLoRA(init_r=2, target_r=1, total_step=10),  # T5: every projection by default
    "adapter": lambda: BottleneckAdapter(bottleneck=4),
    "ia3": IA3,
    "prefix": lambda: PrefixTuning(num_virtual_tokens=4),
    "prompt": lambda: PromptTuning(num_virtual_tokens=4),
}


@pytest.fixture(scope="module", params=["t5", "gpt2", "llama"])
def backbone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, save_tiny_model(request.param, tmp_path_factory.mktemp("hf") / request.param)


def build_model(family: str, folder: Path) -> tuple[torch.nn.Module, object]:
    tokenizer = PretrainedTokenizer(str(folder)).load()
    if family == "t5":
        return build_pretrained_seq2seq(tokenizer, str(folder)), tokenizer
    return build_causal_lm(tokenizer, str(folder)), tokenizer


def train_step(model: torch.nn.Module, tokenizer: object) -> None:
    source = tokenizer(["A library for Python", "Hello"], padding=True, return_tensors="pt")
    labels = torch.randint(5, 100, (2, 4))
    decoder_input_ids = shift_right(labels, model.decoder_start_token_id, tokenizer.pad_token_id)
    logits = model(source["input_ids"], source["attention_mask"].bool(), decoder_input_ids)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_a_tenth_of_the_parameters_or_less(method: str, backbone: tuple[str, Path]) -> None:
    model, tokenizer = build_model(*backbone)
    total = sum(p.numel() for p in model.parameters())
    model = METHODS[method]()(model)
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    assert 0 < sum(p.numel() for p in trainable.values()) * 10 <= total
    train_step(model.train(), tokenizer)
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[name], value) for name, value in trainable.items())
    assert all(torch.equal(after[name], value) for name, value in frozen.items())


@pytest.mark.parametrize(("method", "mergeable"), [("lora", True), ("adapter", True), ("ia3", True), ("prefix", False)])
def test_weight_updates_merge_and_virtual_tokens_do_not(method: str, mergeable: bool, tmp_path: Path) -> None:
    model, tokenizer = build_model("gpt2", save_tiny_model("gpt2", tmp_path / "gpt2"))
    model = METHODS[method]()(model)
    assert can_merge(model) is mergeable
    assert (peft_model_of(merge_adapters(model)) is None) is mergeable  # merged: plain modules again


@pytest.mark.parametrize(("family", "modules"), [("t5", {"wo"}), ("gpt2", {"c_proj"}), ("llama", {"down_proj"})])
def test_adapters_sit_beside_the_feed_forward_outputs_only(family: str, modules: set[str], tmp_path: Path) -> None:
    model, _ = build_model(family, save_tiny_model(family, tmp_path / family))
    model = BottleneckAdapter(bottleneck=4)(model)
    adapted = {name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.requires_grad}
    assert {name.rsplit(".", 2)[0].rsplit(".", 1)[-1] for name in adapted} == modules
    if family == "gpt2":  # c_proj of the MLP, not of the attention
        assert all(".mlp.c_proj." in name for name in adapted)


def test_the_native_model_takes_adapters_on_its_feed_forward_outputs() -> None:
    native = build_weaver(vocab_size=400, d_model=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    adapted = BottleneckAdapter(bottleneck=4)(native)
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".ffn.down.lora_" in name for name in trainable)


def test_virtual_tokens_need_a_huggingface_model() -> None:
    native = build_weaver(vocab_size=400, d_model=64, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(ConfigError, match="peft=prefix needs a HuggingFace model"):
        PrefixTuning()(native)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_tokens_are_refused_with_memory(method: str, tmp_path: Path) -> None:
    """With memory the encoder runs window by window outside peft, which would call the backbone without ids."""
    folder = save_tiny_model("t5", tmp_path / "t5")
    memory = {"window": 16, "stride": 8, "top_k": 4}
    model = build_pretrained_seq2seq(PretrainedTokenizer(str(folder)).load(), str(folder), memory=memory)
    with pytest.raises(ConfigError, match=f"peft={method} cannot be combined with model.memory"):
        METHODS[method]()(model)
    assert peft_model_of(METHODS["lora"]()(model)) is not None  # weight updates adapt the windowed encoder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["peft=adalora", "trainer.max_steps=-1"], "peft.total_step=-1: AdaLoRA schedules its ranks over the run"),
        (["peft=lora", "peft.r=0"], "peft.r must be >= 1, got 0"),
        (["peft=adapter", "peft.bottleneck=0"], "peft.bottleneck must be >= 1, got 0"),
        (["peft=adalora", "peft.orth_reg_weight=-1"], "peft.orth_reg_weight must be a number >= 0, got -1"),
        (
            ["peft=adalora", "trainer.max_steps=8"],
            "peft=adalora: the run has 8 optimizer steps, which leaves no room between peft.tinit=50 and "
            "peft.tfinal=100 to allocate ranks; set trainer.max_steps or lower them.",
        ),
    ],
)
def test_bad_peft_settings_give_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build(compose_config(overrides).peft, "peft")


def test_adalora_rank_allocator_state_survives_a_checkpoint(tmp_path: Path) -> None:
    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    method = AdaLoRA(init_r=2, target_r=1, tinit=1, tfinal=2, total_step=6)
    model, tokenizer = build_model("gpt2", folder)
    model = method(model)
    for step in range(1, 4):  # before step 4 (total_step - tfinal), when peft clears the scores
        train_step(model.train(), tokenizer)
        allocate_ranks(model, step)
    path = tmp_path / "state.pt"
    torch.save(rank_allocator_state(model), path)
    restored = method(build_model("gpt2", folder)[0])
    load_rank_allocator_state(restored, torch.load(path, weights_only=True))
    saved, loaded = rank_allocator_state(model), rank_allocator_state(restored)
    assert saved["rank_pattern"] and loaded["rank_pattern"] == saved["rank_pattern"]
    for name in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        assert saved[name].keys() == loaded[name].keys() and saved[name]
        assert all(torch.equal(saved[name][key], loaded[name][key]) for key in saved[name])


def test_adaloras_orthogonal_penalty_is_pefts_own_and_joins_the_training_loss(tmp_path: Path) -> None:
    from weaver.models.adapters import adalora_of, orthogonal_penalty

    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    model = AdaLoRA(init_r=2, target_r=1, total_step=10, orth_reg_weight=0.3)(build_model("gpt2", folder)[0])
    tuner = adalora_of(model.eval())  # no adapter dropout: both forwards see the same model
    with torch.no_grad():  # P and Q start orthogonal-ish at zero; move them so the penalty is not trivial
        for name, parameter in tuner.model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                parameter.normal_()
    ids = torch.randint(5, 100, (2, 6))
    with torch.no_grad():
        plain = tuner.model(input_ids=ids).logits  # the wrapped model alone: peft adds nothing without a loss
        regularised = tuner(input_ids=ids, labels=ids).loss
        unregularised = F.cross_entropy(plain[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        penalty = orthogonal_penalty(model)
    assert penalty > 0
    torch.testing.assert_close(unregularised + penalty, regularised)
    assert orthogonal_penalty(LoRA(r=2)(build_model("gpt2", folder)[0])) is None


def test_adalora_moves_ranks_after_optimizer_steps_only(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    monkeypatch.setattr("weaver.tasks.seq2seq.allocate_ranks", lambda model, step: steps.append(step))
    adalora = ["peft=adalora", "peft.init_r=2", "peft.target_r=1", "peft.tinit=0", "peft.tfinal=1"]
    accumulating = ["trainer.accumulate_grad_batches=2", "trainer.max_steps=3", "trainer.val_check_interval=6"]
    cfg = tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, *adalora, *accumulating], tmp_path)
    with open_dict(cfg):
        cfg.test = False
    train(cfg)
    assert steps == [1, 2, 3]  # not also after the first micro-batch, on half a window's gradients
