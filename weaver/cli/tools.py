"""Each command-line tool's `main()` (`python train.py`, `weaver-train`, ...). The tool's own module, and with it
PyTorch and Lightning, is imported once the config is composed: `--help`, a mistyped key or group option, an
unset `ckpt_path` and (for the tools reading a checkpoint) the values `weaver.cli.inputs` checks answer in about a
second."""

from weaver.cli.entry import entry_point, imported_on_call
from weaver.cli.inputs import check_evaluate, check_explain, check_predict
from weaver.cli.overrides import checkpoint_tool

train = entry_point("train", imported_on_call("weaver.cli.train:run"))
evaluate = checkpoint_tool("eval", imported_on_call("weaver.cli.evaluate:evaluate"), check_evaluate)
predict = checkpoint_tool("predict", imported_on_call("weaver.cli.predict:predict"), check_predict)
explain = checkpoint_tool("explain", imported_on_call("weaver.cli.explain:explain"), check_explain)
export = entry_point("export", imported_on_call("weaver.cli.export:export"))
