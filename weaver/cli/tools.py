"""Each command-line tool's `main()` (`python train.py`, `weaver-train`, ...). The tool's own module, and with it
PyTorch and Lightning, is imported once the config is composed: `--help`, a mistyped key or group option and an
unset `ckpt_path` answer in about a second."""

from weaver.cli.entry import entry_point, imported_on_call
from weaver.cli.overrides import checkpoint_tool

train = entry_point("train", imported_on_call("weaver.cli.train:run"))
evaluate = checkpoint_tool("eval", imported_on_call("weaver.cli.evaluate:evaluate"))
predict = checkpoint_tool("predict", imported_on_call("weaver.cli.predict:predict"))
explain = checkpoint_tool("explain", imported_on_call("weaver.cli.explain:explain"))
export = entry_point("export", imported_on_call("weaver.cli.export:export"))
