"""Every `python train.py|eval.py|predict.py|export.py|explain.py ...` command the README, `experiments/` and the
configs' comments show composes: a renamed group, option or key, or an override the shell or Hydra's grammar reads
otherwise, fails here rather than for the reader who pastes it."""

from __future__ import annotations

import codecs
import re
import shlex

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.helpers import ROOT
from weaver.config import config_dir, register_resolvers

# A command runs to the end of its line, or on through lines ending in a backslash, and stops at a code span's or a
# table cell's end.
COMMAND = re.compile(r"python (train|eval|predict|export|explain)\.py((?:\\\n|[^`|\n])*)")
# Shown on purpose as what fails (the benchmark of how fast a bad override is answered).
DELIBERATELY_BAD = {"model=nope"}


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of each command, placeholders (`<best>.ckpt`, `name_or_path=...`) filled in;
    commands written as outlines (`train.py ... resume=auto`, `{hidden_size: 256, ...}`, `[optional arguments]`)
    are left out."""
    commands = []
    documents = [ROOT / "README.md", *sorted((ROOT / "experiments").rglob("*.md"))]
    for document in [*documents, *sorted(config_dir().rglob("*.yaml"))]:
        text = document.read_text(encoding="utf-8")
        for match in COMMAND.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            arguments = match.group(2).replace("\\\n", " ").split(" #")[0]
            arguments = shlex.split(re.sub(r"<[^>]*>|(?<==)\.\.\.", "placeholder", ansi_c_quoted(arguments)))
            if any("..." in argument or argument.startswith("[") for argument in arguments):
                continue
            if "--cfg" in arguments:  # --cfg job|hydra|all
                del arguments[arguments.index("--cfg") : arguments.index("--cfg") + 2]
            arguments = [argument for argument in arguments if not argument.startswith("-")]  # -m, --help
            if arguments and not DELIBERATELY_BAD & set(arguments):
                commands.append((f"{document.relative_to(ROOT)}:{line}", match.group(1), arguments))
    return commands


def ansi_c_quoted(arguments: str) -> str:
    """bash's `$'...'` words (`\\n` a line break) quoted as `shlex` reads words."""
    return re.sub(
        r"\$'((?:[^'\\]|\\.)*)'", lambda word: shlex.quote(codecs.decode(word.group(1), "unicode_escape")), arguments
    )


def first_of_each_sweep(arguments: list[str]) -> list[str]:
    """A sweep's overrides (`-m lr=1e-3,3e-3`) as its first job's."""
    overrides = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            override_value = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={override_value}")
        else:
            overrides.append(override.input_line)
    return overrides


def test_the_documents_show_commands() -> None:
    commands = documented_commands()
    assert len(commands) > 100
    assert {script for _, script, _ in commands} == {"train", "eval", "predict", "export", "explain"}


def test_every_documented_command_composes() -> None:
    register_resolvers()
    failures = []
    for where, script, arguments in documented_commands():
        try:
            GlobalHydra.instance().clear()
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                compose(script, overrides=first_of_each_sweep(arguments))
        except Exception as error:  # noqa: BLE001 (every failure is reported with where it is written)
            failures.append(f"{where}: python {script}.py {shlex.join(arguments)}\n    {str(error).splitlines()[0]}")
    GlobalHydra.instance().clear()
    assert not failures, "\n".join(failures)
