"""Each command-line tool's `main()` (`python train.py`, `weaver-train`, ...). The tool's own module, and with it
PyTorch and Lightning, is imported once the config is composed: `--help`, a mistyped key or group option, an
unset `ckpt_path`, a `ckpt_path` that is no checkpoint file and (for the tools reading a checkpoint) the values
`weaver.cli.inputs` checks answer in about a second."""

from typing import Any

from omegaconf import DictConfig

from weaver.cli.entry import entry_point, imported_on_call
from weaver.cli.inputs import check_evaluate, check_explain, check_predict
from weaver.cli.overrides import checkpoint_tool
from weaver.errors import checkpoint_file

run_training = imported_on_call("weaver.cli.train:run")


def train_from_given_checkpoint(cfg: DictConfig) -> Any:
    """train.py: a `ckpt_path` to resume or test that is no checkpoint file is named first, as the other tools do."""
    if cfg.get("ckpt_path"):
        checkpoint_file(cfg.ckpt_path)
    return run_training(cfg)


train = entry_point("train", train_from_given_checkpoint)
evaluate = checkpoint_tool("eval", imported_on_call("weaver.cli.evaluate:evaluate"), check_evaluate)
predict = checkpoint_tool("predict", imported_on_call("weaver.cli.predict:predict"), check_predict)
explain = checkpoint_tool("explain", imported_on_call("weaver.cli.explain:explain"), check_explain)
export = entry_point("export", imported_on_call("weaver.cli.export:export"))
