"""Every `peft=` method survives a SIGKILL: `resume=auto` continues from the last checkpoint with the adapter weights,
the optimizer state, the random generators and AdaLoRA's rank allocator, taking the very steps the killed run took;
then the resumed run exports (merged where the method allows, adapters alone otherwise) and the export loads.

The killed run is a process of its own; the resumed one runs in the test's process (`resume=auto` as `train.py` applies
it), which saves a start-up per case. Both in float32, so that their losses agree to rounding whatever the threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict
from peft import PeftModel

from tests.conftest import compose_config
from tests.helpers import INTERRUPTIBLE, announce_step, kill_after_step, logged_values, start
from tests.models.tiny_hf import save_tiny_model
from weaver.cli.resume import apply_resume
from weaver.cli.train import train
from weaver.export import export_checkpoint, from_pretrained

MODELS = {"t5": "model=hf_seq2seq", "gpt2": "model=hf_causal_lm"}
MERGED = {"lora", "adalora", "adapter", "ia3"}  # weight updates fold into the weights; virtual tokens do not
METHODS = {
    "lora": [],
    # Ranks move at every step from the first on, so the resumed steps depend on the importance scores.
    "adalora": ["peft.init_r=2", "peft.target_r=1", "peft.tinit=1", "peft.tfinal=2", "peft.deltaT=1"],
    "adapter": ["peft.bottleneck=4"],
    "ia3": [],
    "prefix": ["peft.num_virtual_tokens=4"],
    "prompt": ["peft.num_virtual_tokens=4"],
}
# A checkpoint at step 4, the kill after step 7 (before the next one, at 8): the resumed run takes steps 5 to 8, which
# the CSV log's step column, counting from 0, calls 4 to 7.
CHECKPOINT, KILLED = 4, 7


# LoRA (the common case), AdaLoRA (its rank allocator's state) and the virtual tokens (a past-key-values prefix or
# prompt embeddings, which an encoder-decoder and a decoder-only model take differently) on both backbones; the
# bottleneck adapter and IA3, which resume as LoRA's weights do, on T5's linear layers only.
CASES = [(method, family) for method in ("lora", "adalora") for family in MODELS]
CASES += [("adapter", "t5"), ("ia3", "t5")]
CASES += [(method, family) for method in ("prefix", "prompt") for family in MODELS]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "family"), CASES)
def test_a_peft_run_killed_after_a_checkpoint_resumes_with_the_same_steps(
    method: str, family: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    folder = save_tiny_model(family, tmp_path / family)
    args = [
        MODELS[family],
        f"model.name_or_path={folder}",
        f"peft={method}",
        *METHODS[method],
        f"data.data_dir={tiny_data_dir}",
        "data.max_source_length=40",  # the tiny GPT-2 has 128 positions for prompt and completion
        "data.max_target_length=24",
        "hardware=cpu",
        "trainer.precision=32-true",
        *INTERRUPTIBLE,
        "trainer.max_steps=8",
        f"trainer.val_check_interval={CHECKPOINT}",
        "test=false",
        "resume=auto",
        *announce_step(KILLED),
    ]
    kill_after_step(start(args, tmp_path), KILLED)
    (killed,) = tmp_path.glob("outputs/translation/*/*")
    cfg = compose_config(args)
    with open_dict(cfg):
        cfg.paths.output_dir = str(killed.parents[1] / "resumed" / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")  # the killed run's (tests.helpers.user_env)
    apply_resume(cfg, args)
    assert cfg.ckpt_path == str(killed / "checkpoints" / "last.ckpt")
    train(cfg)

    logged = ["train/loss", "train/adalora_rank"] if method == "adalora" else ["train/loss"]
    for name in logged:
        before, after = logged_values(killed, name), logged_values(Path(cfg.paths.output_dir), name)
        assert (min(after), max(after)) == (CHECKPOINT, 7)
        # Step 5 runs on the restored weights; step 6 also on the optimizer state (and rank scores) step 5 used.
        first_two = (CHECKPOINT, CHECKPOINT + 1)
        assert [after[step] for step in first_two] == pytest.approx([before[step] for step in first_two], rel=1e-5)

    exported = tmp_path / "exported"
    export_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", exported)
    assert (exported / "adapter_config.json").is_file() is (method not in MERGED)
    assert isinstance(from_pretrained(exported), PeftModel) is (method not in MERGED)  # loads, adapters on top
