"""Bad input of every kind gives one line that names the key, file or row and what to do, and changes no file."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from tests.conftest import SHORT_TRAINING, tiny_run_config, write_jsonl
from tests.helpers import TINY, run_cli
from weaver.checkpoints import read_checkpoint, restore_run
from weaver.cli.overrides import command_line_changes
from weaver.cli.train import train
from weaver.config import config_dir
from weaver.data import PretrainedTokenizer, Seq2SeqDataModule, TrainedTokenizer
from weaver.data.sources import carve_missing_splits, existing_file, files_in_dir, load_file
from weaver.errors import ConfigError, DataError, WeaverError
from weaver.hub import load_pretrained
from weaver.inference import Example, Predictor

PAIRS = [
    {"en": f"the package number {i} provides tools", "de": f"das Paket Nummer {i} bietet Werkzeuge"} for i in range(60)
]


def pairs_of(tmp_path: Path, train_file: Path, **options: str) -> dict:
    fields = {"source_field": "en", "target_field": "de", **options}
    tokenizer = TrainedTokenizer(vocab_size=300, min_frequency=1)
    return Seq2SeqDataModule(tokenizer, train_file=str(train_file), cache_dir=str(tmp_path / "cache"), **fields).pairs()


def one_line(error: pytest.ExceptionInfo[WeaverError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def load_refusal(path: Path, content: str | bytes) -> str:
    """The one-line error `load_file` gives for a train file of `content` at `path`."""
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DataError) as error:
        load_file("train", str(path), str(path.parent / "cache"))
    return one_line(error)


def test_a_missing_data_file_names_the_key_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        pairs_of(tmp_path, tmp_path / "nope.jsonl")
    assert re.match(r"data.train_file: file not found: '.*nope.jsonl'. Check the path", one_line(error))


def test_a_folder_given_as_a_data_file_points_at_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        pairs_of(tmp_path, tmp_path)
    assert one_line(error) == (
        f"data.train_file: '{tmp_path}' is a folder, not a file: for a folder of train/validation/test files, set "
        f"data.data_dir={tmp_path} instead of data.train_file."
    )
    with pytest.raises(DataError) as error:  # predict.py's input file
        existing_file(str(tmp_path), "input_file")
    assert one_line(error) == f"input_file: '{tmp_path}' is a folder, not a file: give one of its files."


def test_an_empty_data_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "train.jsonl"
    assert load_refusal(empty, "\n") == f"data.train_file: '{empty}' is empty. Give a file with at least one row."


@pytest.mark.parametrize(("name", "text"), [("train.csv", "en,de\n"), ("train.jsonl", "{}\n{}\n")])
def test_a_data_file_without_rows_is_named(tmp_path: Path, name: str, text: str) -> None:
    rowless = tmp_path / name
    assert load_refusal(rowless, text) == (
        f"data.train_file: '{rowless}' holds no rows (a header alone, or records without fields): give at least one "
        "row."
    )


def test_json_lines_that_are_not_records_are_skipped_counted_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = write_jsonl(tmp_path / "train.jsonl", PAIRS[:12]).read_text().splitlines()
    lines[4] = '["a dog", "ein Hund"]'
    lines[7] = '{"en": "cut sh'
    lines[11] = '{"en": "cut short", "de": '  # the last line broken: datasets then logs an error itself
    for name in ("broken.jsonl", "broken.json"):  # JSON lines in a .json file are read the same way
        broken = tmp_path / name
        broken.write_text("\n".join(lines) + "\n")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rows = load_file("train", str(broken), str(tmp_path / "cache"))
        assert caplog.messages == [
            f"data.train_file: skipped 3 of the 12 lines of '{broken}' that are not JSON records, read as rows without "
            'fields (line 5 is a JSON list, not an object of fields ({"field": ...}); line 8 is not valid JSON '
            "(Unterminated string starting at column 8); line 12 is not valid JSON (Expecting value at column 26))."
        ]
        # Each is a row without fields (skipped and counted as missing its source), so later rows keep their numbers.
        kept = [None if number in (4, 7, 11) else row["en"] for number, row in enumerate(PAIRS[:12])]
        assert rows["en"] == kept
    # A byte order mark opens a file, not a line after the first.
    broken.write_text("\n".join(lines[:4] + ["\ufeff" + lines[5]]) + "\n")
    with caplog.at_level(logging.WARNING):
        load_file("train", str(broken), str(tmp_path / "cache"))
    assert "line 5 is not valid JSON (Unexpected UTF-8 BOM" in caplog.messages[-1]
    # The file is read as it is when it changes.
    broken.write_text("\n".join(lines[:4]) + "\n")
    assert len(load_file("train", str(broken), str(tmp_path / "cache"))) == 4


def test_a_json_lines_file_half_of_whose_lines_are_not_records_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    assert load_refusal(path, 'en,de\na cat,eine Katze\n{"en": "a dog", "de": "ein Hund"}\n[1]\n') == (
        f"data.train_file: 3 of the 4 lines of '{path}' are not JSON records (line 1 is not valid JSON (Expecting "
        "value at column 1); line 2 is not valid JSON (Expecting value at column 1); line 4 is a JSON list, not an "
        'object of fields ({"field": ...})): write one record per line, {"field": ...}.'
    )


@pytest.mark.parametrize(
    ("names", "split"), [(["train.csv", "train.jsonl"], "train"), (["dev.jsonl", "validation.csv"], "validation")]
)
def test_two_files_for_one_split_in_a_data_dir_are_refused(tmp_path: Path, names: list[str], split: str) -> None:
    for name in ["train.jsonl", "test.jsonl", *names]:
        (tmp_path / name).write_text("{}\n")
    with pytest.raises(DataError) as error:
        files_in_dir(str(tmp_path))
    first, second = (tmp_path / name for name in names)
    assert one_line(error) == (
        f"data.data_dir: '{first}' and '{second}' are both {split} files: move or rename one of them."
    )


def test_the_file_each_split_is_read_from_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ["train.jsonl.gz", "dev.csv", "test.tsv", "notes.txt"]:
        (tmp_path / name).write_text("")
    with caplog.at_level(logging.INFO):
        files_in_dir(str(tmp_path))
    assert caplog.messages == [
        f"data.data_dir={tmp_path}: reading train from train.jsonl.gz, validation from dev.csv, test from test.tsv."
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (  # zstd's magic number, then a frame: not read, where it was called empty
            "train.jsonl.zst",
            b"\x28\xb5\x2f\xfd" + bytes(range(64)),
            "'{path}' is zstd-compressed, which is not read: decompress it (zstd -d) or compress it with gzip, bzip2 "
            "or xz instead.",
        ),
        (  # a syntax error in a JSON document, named by its line and column (not "line 1")
            "train.json",
            b'[\n  {"en": "a cat", "de": "eine Katze"},\n  {"en": "a dog" "de": "ein Hund"}\n]\n',
            "cannot read '{path}' as json: line 3 is not valid JSON (Expecting ',' delimiter at column 18).",
        ),
    ],
)
def test_a_file_that_cannot_be_read_says_why(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    assert load_refusal(path, content) == "data.train_file: " + message.format(path=path)


@pytest.mark.parametrize(
    "layout",
    [
        json.dumps({"en": [p["en"] for p in PAIRS], "de": [p["de"] for p in PAIRS]}),
        pd.DataFrame(PAIRS).to_json(),  # pandas' default: {"en": {"0": ..., ...}, ...}
        json.dumps({"data": PAIRS}, indent=2),
    ],
    ids=["columns", "pandas", "wrapped"],
)
def test_a_json_object_that_is_not_one_record_is_refused(tmp_path: Path, layout: str) -> None:
    document = tmp_path / "train.json"
    assert load_refusal(document, layout) == (
        f"data.train_file: '{document}' holds one JSON object of columns or lists, which would be read as one row: "
        """write a list of records ([{"field": ...}, ...]) or JSON lines, one record per line (pandas: """
        "to_json(orient='records', lines=True))."
    )


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("[]", """is an empty JSON list: give a list of records ([{"field": ...}, ...])."""),
        (
            json.dumps([PAIRS[0], ["a dog", "ein Hund"]], indent=2),
            """: item 2 of the JSON list is a JSON list, not an object of fields ({"field": ...}).""",
        ),
        ('"a cat"', """holds a JSON str: give a list of records ([{"field": ...}, ...])."""),
    ],
    ids=["empty", "not-objects", "string"],
)
def test_a_json_document_that_is_not_a_list_of_records_is_named(tmp_path: Path, layout: str, message: str) -> None:
    document = tmp_path / "train.json"
    separator = "" if message[0] == ":" else " "
    assert load_refusal(document, layout) == f"data.train_file: '{document}'{separator}{message}"


@pytest.mark.parametrize(
    ("layout", "column"),
    [
        (json.dumps(PAIRS, indent=2), "en"),
        ("\ufeff" + json.dumps(PAIRS), "en"),
        (json.dumps(PAIRS[0]), "en"),  # one record on one line: JSON lines of one row
        (json.dumps([p["en"] for p in PAIRS]), "text"),  # strings: `datasets` reads rows of one column, text
    ],
    ids=["records", "byte-order-mark", "one-record", "strings"],
)
def test_json_documents_of_records_load(tmp_path: Path, layout: str, column: str) -> None:
    document = tmp_path / "train.json"
    document.write_text(layout, encoding="utf-8")
    dataset = load_file("train", str(document), str(tmp_path / "cache"))
    assert dataset[column][0] == PAIRS[0]["en"]


def test_one_record_with_nested_fields_loads_as_one_row(tmp_path: Path) -> None:
    document = tmp_path / "train.json"
    record = {"id": 7, "translation": PAIRS[0], "tags": ["a", "b"]}
    document.write_text(json.dumps(record, indent=2), encoding="utf-8")
    assert load_file("train", str(document), str(tmp_path / "cache")).to_list() == [record]
    # Records wrapped in an object are not one record (SQuAD's layout).
    document.write_text(json.dumps({"version": "v2.0", "data": PAIRS}), encoding="utf-8")
    with pytest.raises(DataError, match="holds one JSON object of columns or lists"):
        load_file("train", str(document), str(tmp_path / "cache"))


def test_a_train_file_too_small_to_carve_splits_from_is_named() -> None:
    with pytest.raises(DataError) as error:
        carve_missing_splits({"train": Dataset.from_dict({"en": ["one row"], "de": ["eine Zeile"]})}, 0.05, 0.05, 0)
    assert one_line(error) == (
        "data.test_fraction=0.05 of the 1 train rows leaves no row for train: give more rows, or a data.test_file."
    )


def test_a_byte_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", PAIRS).read_bytes().replace(b"number 7 ", b"number \xff7 ")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(data)
    with pytest.raises(DataError) as error:
        pairs_of(tmp_path, latin)
    assert one_line(error) == (
        f"data.train_file: '{latin}' is not UTF-8 text: line 8 has byte 0xff at column 28. Save it as UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8)."
    )
    assert latin.read_bytes() == data


def test_a_wrong_column_names_the_key_and_the_columns_there_are(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        pairs_of(tmp_path, write_jsonl(tmp_path / "train.jsonl", PAIRS), target_field="fr")
    assert "data.target_field='fr': no column 'fr' in the train split (columns: en, de)" in one_line(error)


def test_rows_with_missing_empty_or_non_text_fields_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [{"en": "", "de": "leer"}, {"en": "missing target"}, {"en": 42, "de": "Zahl"}, {"en": "x", "de": "   "}]
    with caplog.at_level(logging.WARNING):
        pairs = pairs_of(tmp_path, write_jsonl(tmp_path / "train.jsonl", PAIRS + bad))
    assert sum(len(pairs[split]) for split in pairs) == len(PAIRS)
    message = " ".join(caplog.messages)
    assert sum(int(n) for n in re.findall(r"skipped (\d+) of", message)) == 4
    assert "en empty" in message and "de missing" in message and "en not text" in message


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello world\n")
    with pytest.raises(ConfigError) as error:
        read_checkpoint(notes)
    assert one_line(error).startswith(f"ckpt_path='{notes}' is not a readable checkpoint (truncated, or not a")
    assert notes.read_text() == "hello world\n"


def test_a_truncated_checkpoint_is_named(translation_checkpoint: Path, train_config: DictConfig) -> None:
    truncated = Path(train_config.paths.cache_dir) / "truncated.ckpt"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(translation_checkpoint.read_bytes()[:100_000])
    with pytest.raises(ConfigError) as error:
        read_checkpoint(truncated)
    assert "is not a readable checkpoint (truncated, or not a checkpoint at all" in one_line(error)
    with open_dict(train_config):  # train.py names it before building anything, not Lightning once all is built
        train_config.ckpt_path = str(truncated)
    with pytest.raises(ConfigError, match="is not a readable checkpoint .*: it is no complete zip archive"):
        train(train_config)
    assert not Path(train_config.paths.output_dir).exists()


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        read_checkpoint(tmp_path / "gone.ckpt")
    assert one_line(error) == f"ckpt_path='{tmp_path / 'gone.ckpt'}' is not a file."


def test_a_negative_learning_rate_names_the_optimizer(train_config: DictConfig) -> None:
    with open_dict(train_config):
        train_config.optimizer.lr = -0.001
    with pytest.raises(ConfigError) as error:
        train(train_config)
    assert one_line(error) == "optimizer: Invalid learning rate: -0.001 (check the values under 'optimizer')"
    assert not (Path(train_config.paths.output_dir) / "run_info").exists()  # refused before anything is set up
    with open_dict(train_config):
        train_config.optimizer.lr, train_config.optimizer.betas = 0.001, [0.9]
    with pytest.raises(ConfigError) as error:
        train(train_config)
    assert one_line(error).startswith("optimizer: list index out of range full_key: [1]")


def test_a_misspelt_override_is_named_without_a_traceback(tmp_path: Path) -> None:
    result = run_cli("optimizer.lrr=0.1", *TINY, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "Could not override 'optimizer.lrr'" in result.stderr and "Traceback" not in result.stderr


def test_a_token_budget_below_every_example_names_the_longest(train_config: DictConfig) -> None:
    with open_dict(train_config):
        train_config.data.max_tokens = 5
    with pytest.raises(ConfigError) as error:
        train(train_config)
    assert re.fullmatch(
        r"data.max_tokens=5 is below the length of every train example \(the longest has (\d+) tokens\), so each "
        r"would be a batch of one: set data.max_tokens to at least \1.",
        one_line(error),
    )


def test_an_input_longer_than_the_source_limit_is_named_when_predicting(
    translation_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    predictor = Predictor(restore_run(translation_checkpoint))
    with caplog.at_level(logging.WARNING):
        list(predictor.generate([Example("a short one", id=0), Example(" ".join(["word"] * 400), id=1)]))
    assert caplog.messages == [
        "Input 1 (the id of its prediction) is longer than data.max_source_length=128 tokens and is cut to fit, as "
        "in training: split it, or give this command a larger data.max_source_length with memory=recall (which "
        "reads any length)."
    ]


@pytest.mark.parametrize(
    ("multirun", "message"),
    [
        (["-m"], "launcher=slurm submits jobs with SLURM's sbatch and srun, not found on PATH"),
        ([], "launcher=slurm submits the jobs of a sweep: add -m"),
    ],
)
def test_slurm_launcher_off_a_cluster_is_refused_in_one_line(
    tmp_path: Path, multirun: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    env = {"PATH": str(Path(sys.executable).parent)}  # python, without SLURM's commands
    result = run_cli(*multirun, "launcher=slurm", cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {message}") and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """The last checkpoint of a two-step run of the tiny native model with LoRA adapters (rank 8)."""
    folder = tmp_path_factory.mktemp("lora")
    overrides = [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, "peft=lora", "trainer.max_steps=2", "test=false"]
    cfg = tiny_run_config([*overrides, "trainer.val_check_interval=2"], folder)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "trained", "asked"),
    [
        (["peft=ia3"], "peft=lora (r=8, alpha=16, dropout=0.05, bias=none)", "peft=ia3"),
        (["peft=lora", "peft.r=4"], "peft=lora (r=8)", "peft=lora (r=4)"),
        ([], "peft=lora (r=8, alpha=16, dropout=0.05, bias=none)", "peft=none"),
    ],
    ids=["another_method", "another_rank", "no_adapters"],
)
def test_continuing_a_checkpoint_with_other_peft_settings_names_both(
    lora_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path, overrides: list[str], trained: str, asked: str
) -> None:
    """Lightning would fail to load the weights with a page of missing and unexpected keys."""
    cfg = tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, *overrides], tmp_path)
    with open_dict(cfg):
        cfg.ckpt_path = str(lora_checkpoint)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert one_line(error) == (
        f"ckpt_path='{lora_checkpoint}' was trained with {trained}, but this run asks for {asked}: its weights do not "
        "fit that model; to continue that run, drop those overrides; to fine-tune its weights with new settings, "
        f"start from them with model=weaver_pretrained model.init_from='{lora_checkpoint}'."
    )


@pytest.mark.slow
def test_a_checkpoints_peft_method_cannot_change_when_it_is_evaluated(lora_checkpoint: Path) -> None:
    """`eval.py peft=ia3` met the stored LoRA settings (`peft.r, ...: not an option of IA3`), `peft=none` was
    ignored; a rank other than the trained one does not fit the weights."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        tool = compose("eval", overrides=[f"ckpt_path={lora_checkpoint}"])
        options = ("peft=ia3", "peft=none", "++peft.r=4", "peft=lora")
        changes = {option: command_line_changes([option], tool) for option in options}
    for method in ("ia3", "none"):
        with pytest.raises(ConfigError) as error:
            restore_run(lora_checkpoint, changes[f"peft={method}"])
        assert one_line(error) == (
            f"ckpt_path='{lora_checkpoint}' was trained with peft=lora, and a checkpoint's peft method cannot change "
            f"after training: drop peft={method}."
        )
    with pytest.raises(ConfigError) as error:
        restore_run(lora_checkpoint, changes["++peft.r=4"])
    assert one_line(error) == (
        f"ckpt_path='{lora_checkpoint}' was trained with peft=lora (r=8), but the overrides ask for peft=lora (r=4): "
        "its weights do not fit that model; drop those overrides."
    )
    assert restore_run(lora_checkpoint, changes["peft=lora"]).cfg.peft.r == 8  # the method it was trained with


def test_a_value_the_configs_leave_to_the_command_is_named_first(train_config: DictConfig) -> None:
    with open_dict(train_config):
        train_config.model.init_from = "???"
        train_config.tokenizer.name_or_path = "${model.init_from}"  # as model=weaver_pretrained interpolates it
    with pytest.raises(ConfigError) as error:
        train(train_config)
    assert one_line(error) == "model.init_from: required by the chosen configs: add model.init_from=... to the command."


def test_a_run_folder_given_for_a_saved_model_names_its_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)

    def refusing(folder: str) -> None:  # a loader's own message says best what is wrong with a folder
        raise ConfigError(f"model.name_or_path='{folder}' is a decoder-only gpt2 model: use model=hf_causal_lm.")

    with pytest.raises(ConfigError) as error:
        load_pretrained(refusing, str(tmp_path / "run"), "model.name_or_path")
    assert one_line(error).endswith("is a decoder-only gpt2 model: use model=hf_causal_lm.")
    with pytest.raises(ConfigError) as error:
        PretrainedTokenizer(str(tmp_path / "run")).load()
    assert one_line(error).startswith(
        f"tokenizer.name_or_path='{tmp_path / 'run'}' is a training run's folder: give one of its checkpoints "
        f"({tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}) or a folder export.py wrote from one"
    )
