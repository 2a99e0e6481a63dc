"""What the command line of a tool that reads a checkpoint must hold, checked before PyTorch and Lightning load: a
mistyped value is answered in about a second, not after the tool's imports."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from weaver.errors import ConfigError, require_positive_int

REPLY_TO = ("every_turn", "last_turn")  # a conversation file's turns a dialogue model answers
SPLITS = ("test", "validation")  # what eval.py scores


def check_inputs(cfg: DictConfig, alternative: str = "") -> None:
    """`batch_size`, `reply_to`, and exactly one of `input_file` and `input`."""
    if cfg.reply_to not in REPLY_TO:
        raise ConfigError(f"reply_to must be one of {', '.join(REPLY_TO)}, got {cfg.reply_to!r}.")
    require_positive_int("batch_size", cfg.batch_size)
    if (cfg.input is None) == (cfg.input_file is None):
        raise ConfigError(f'Give exactly one of input_file=<file> and input="<text>"{alternative}.')
    if cfg.input is not None and not str(cfg.input).strip():  # a file's empty rows are skipped; this one is all
        raise ConfigError('input is empty: give the text, input="<text>".')


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) a link to it."""
    first_path, second_path = Path(first).expanduser(), Path(second).expanduser()
    if first_path.resolve() == second_path.resolve():
        return True
    return first_path.exists() and second_path.exists() and first_path.samefile(second_path)


def check_output_file(cfg: DictConfig) -> None:
    """Predictions are JSON lines, and written over the input file would destroy it."""
    if cfg.output_file is not None and not str(cfg.output_file).endswith(".jsonl"):
        raise ConfigError(
            f"output_file='{cfg.output_file}': predictions are written as JSON lines, one record per input; name the "
            "file .jsonl."
        )
    if cfg.output_file is not None and cfg.input_file is not None and same_file(cfg.output_file, cfg.input_file):
        raise ConfigError(
            f"output_file='{cfg.output_file}' is the input_file: writing predictions would overwrite the inputs; "
            "give another output_file."
        )


def check_predict(cfg: DictConfig) -> None:
    """predict.py: a file or a text to read (or a chat on the terminal), and where to write."""
    if cfg.topic is not None and not cfg.interactive:
        raise ConfigError("topic= is for interactive=true (a file's conversations bring their own topics).")
    if cfg.interactive and (cfg.input_file is not None or cfg.input is not None):
        raise ConfigError("interactive=true reads the terminal: drop input_file= and input=, or interactive=true.")
    if not cfg.interactive:
        check_inputs(cfg, " (or interactive=true)")
        check_output_file(cfg)


def check_explain(cfg: DictConfig) -> None:
    """explain.py: a file or a text to read, and the sizes it works within (its `method` is checked where the
    methods live)."""
    check_inputs(cfg)
    for key in ("integration_steps", "max_gradient_source_tokens", "max_heatmap_tokens"):
        require_positive_int(key, cfg[key])


def check_evaluate(cfg: DictConfig) -> None:
    """eval.py: a split it can score."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split must be 'test' or 'validation', got '{cfg.split}'.")
