"""Raw splits from local files or the HuggingFace Hub, with a seeded split of train for missing ones."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import json
import logging
import lzma
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import datasets
from datasets import Dataset, DatasetDict

from weaver.errors import ConfigError, DataError
from weaver.hub import OFFLINE_HINT, hub_reachable, offline_mode

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
# A cell is text as written: pandas' default NA strings (None, NA, null, nan, N/A, ...) would drop real text as
# missing. An empty cell is then "" (empty); the python engine leaves a short row's absent cells None (missing), where
# the C engine would read them as "" too.
CSV_OPTIONS: dict[str, str | bool | int] = {"keep_default_na": False, "engine": "python"}
# File suffix -> (datasets builder, extra builder arguments).
FILE_FORMATS: dict[str, tuple[str, dict[str, str | bool | int]]] = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", CSV_OPTIONS),
    # A tab ends a cell and a line a row, whatever quotes they hold: a quote opening a CSV-style quoted cell would
    # run it on to the next quote, swallowing the rows between.
    ".tsv": ("csv", {**CSV_OPTIONS, "delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".parquet": ("parquet", {}),
    # Plain text, one row (column `text`) per paragraph: blank lines separate them.
    ".txt": ("text", {"sample_by": "paragraph"}),
}
COMPRESSIONS = (".gz", ".bz2", ".xz")
# How to read a compressed text file line by line.
OPENERS: dict[str, Callable[[Path], BinaryIO]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
    "": lambda path: path.open("rb"),
}


def data_suffix(path: Path) -> str:
    """The suffix that names the format, under any compression: `.jsonl` for `train.jsonl.gz`."""
    suffixes = [s for s in path.suffixes if s not in COMPRESSIONS]
    return suffixes[-1] if suffixes else ""


def file_format(path: Path, key: str) -> tuple[str, dict[str, str | bool | int]]:
    """The `datasets` builder for a file, by its suffix. zstd is refused: reading it (here for the UTF-8 check, and in
    `datasets`) needs the zstandard package, which is not a dependency."""
    if path.suffix == ".zst":
        raise DataError(
            f"{key}: '{path}' is zstd-compressed, which is not read: decompress it (zstd -d) or compress it with gzip, "
            "bzip2 or xz instead."
        )
    if data_suffix(path) in FILE_FORMATS:
        return FILE_FORMATS[data_suffix(path)]
    raise DataError(
        f"{key}: cannot tell the format of '{path}': use one of {', '.join(FILE_FORMATS)} (optionally compressed: "
        f"{', '.join(COMPRESSIONS)})."
    )


def files_in_dir(data_dir: str) -> dict[str, str]:
    """`train.*`, `validation.*` and `test.*` files of a folder (the embedded corpora are laid out so); two files for
    one split (`train.csv` and `train.jsonl`, `dev.jsonl` and `validation.csv`) are refused, not one picked by name."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"data.data_dir: '{data_dir}' is not a folder.")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = path.name.split(".")[0]
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS or not path.is_file():
            continue
        if split in found:  # which one is meant cannot be told: reading either would hide the other
            raise DataError(
                f"data.data_dir: '{found[split]}' and '{path}' are both {split} files: move or rename one of them."
            )
        found[split] = path
    if "train" not in found:
        raise DataError(f"data.data_dir: no train.* file in '{data_dir}'.")
    read = ", ".join(f"{split} from {found[split].name}" for split in SPLITS if split in found)
    log.info("data.data_dir=%s: reading %s.", data_dir, read)
    return {split: str(path) for split, path in found.items()}


def existing_file(path: str, key: str) -> Path:
    """`path` (with ~ expanded), which must be a file; the error names the config `key` that gave it."""
    file = Path(path).expanduser()
    if file.is_dir():
        what = (
            f"for a folder of train/validation/test files, set data.data_dir={path} instead of {key}"
            if key.startswith("data.")
            else "give one of its files"
        )
        raise DataError(f"{key}: '{path}' is a folder, not a file: {what}.")
    if not file.is_file():
        raise DataError(f"{key}: file not found: '{path}'. Check the path, or leave it unset.")
    return file


def text_lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a text file, compressed or not; a byte that is not UTF-8 is an error naming the line.
    (pyarrow would load such a byte as it is and `datasets` fail much later, with a traceback from deep inside.)"""
    with OPENERS[file.suffix if file.suffix in COMPRESSIONS else ""](file) as lines:
        for number, line in enumerate(lines, start=1):
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"'{file}' is not UTF-8 text: line {number} has byte 0x{line[error.start]:02x} at column "
                    f"{error.start + 1}. Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
                ) from None


def check_text_file(file: Path, key: str) -> None:
    """One pass before `datasets` reads a text file: UTF-8 throughout, and not empty."""
    try:
        rows = sum(1 for _, text in text_lines(file) if text.strip())  # reads every line, so checks every byte
    except DataError as error:
        raise DataError(f"{key}: {error}") from None
    if rows == 0:
        raise DataError(f"{key}: '{file}' is empty. Give a file with at least one row.")


def cell_reader(file: Path, options: Mapping[str, Any]) -> Iterator[list[str]]:
    """The rows of a CSV or TSV file as Python's `csv` module reads them with the file's options, strict about
    quotes as pandas is."""
    lines = (text.removeprefix("\ufeff") if number == 1 else text for number, text in text_lines(file))
    quoting = options.get("quoting", csv.QUOTE_MINIMAL)
    return csv.reader(lines, delimiter=str(options.get("delimiter", ",")), quoting=quoting, strict=True)


def as_written(cell: str | None) -> str | None:
    """A CSV cell as it is in the file (None where a short row has no such cell)."""
    return cell


def text_columns(file: Path, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with every column read as text: pandas would read a column of numbers (`007`, `1.50`) or `True` as
    numbers or booleans, which are no text to train on, and one whose first rows look numeric would fail at a later
    row that does not. A header of repeated names is left to pandas, which renames them."""
    header = next(cell_reader(file, options), None)
    if not header or len(set(header)) < len(header):
        return options
    return {**options, "converters": dict.fromkeys(header, as_written)}


def where_csv_breaks(file: Path, options: Mapping[str, Any]) -> str:
    """Which row a CSV or TSV file stops parsing in, as pandas' own error does not say: the line it starts on (a
    quoted cell left open runs on to the end of the file)."""
    reader, start = cell_reader(file, options), 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error:
        return f" (the row starting on line {start})"
    return ""


def where_json_breaks(error: json.JSONDecodeError) -> str:
    """What broke and at which column ("Unterminated string starting at column 8": some messages end in "at")."""
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"


def json_line_problem(number: int, text: str) -> str | None:
    """Why the non-blank line `number` of a JSON-lines file is not a record, or None where it is one."""
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte order mark, which `datasets` skips at the start of a file
    try:
        row = json.loads(text.strip())
    except json.JSONDecodeError as error:
        return f"not valid JSON ({where_json_breaks(error)})"
    if not isinstance(row, dict):
        return f'a JSON {type(row).__name__}, not an object of fields ({{"field": ...}})'
    return None


def records_only(file: Path, key: str, cache_dir: str | None) -> Path | None:
    """A copy of a JSON-lines file in which each line that is not a record is an empty one, `{}`, or None where
    every line is a record (the file failed for another reason). An empty record is a row without fields, skipped and
    counted with the other rows missing theirs, and the rows after it keep their numbers. pyarrow would refuse the
    whole file, naming a byte offset into a block rather than the line. A file at least half of whose lines are not
    records is refused instead: it is another format (CSV, records spread over several lines), not a few bad rows."""
    problems, lines, digest = {}, 0, hashlib.sha256()
    for number, text in text_lines(file):  # streamed: one pass to find them, another to write the copy
        if text.strip():
            lines += 1
            digest.update(text.encode())
            if problem := json_line_problem(number, text):
                problems[number] = problem
    if not problems:
        return None
    listed = "; ".join(f"line {number} is {problem}" for number, problem in islice(problems.items(), 3))
    if 2 * len(problems) >= lines:
        raise DataError(
            f"{key}: {len(problems)} of the {lines} lines of '{file}' are not JSON records ({listed}): write one "
            'record per line, {"field": ...}.'
        )
    copy = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "records_only" / f"{digest.hexdigest()[:32]}.jsonl"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own, renamed into place: processes sharing the cache may write the same copy at once.
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=copy.parent, delete=False) as out:
            for number, text in text_lines(file):
                if text.strip():
                    out.write("{}\n" if number in problems else text.rstrip("\r\n") + "\n")
        os.replace(out.name, copy)
    log.warning(
        "%s: skipped %d of the %d lines of '%s' that are not JSON records, read as rows without fields (%s%s).",
        key,
        len(problems),
        lines,
        file,
        listed,
        "; ..." if len(problems) > 3 else "",
    )
    return copy


def check_json_file(file: Path, key: str) -> bool:
    """Whether a `.json` file is JSON lines: its first row an object alone on its line, with more rows after it (the
    per-line check then explains a failure). Else it is one JSON document, checked whole here, since `datasets` reads
    a top-level object as one row and gives a syntax error's place as a byte offset: it must be a list of records."""
    first, *more = islice((text for _, text in text_lines(file) if text.strip()), 2)
    try:
        first_row = json.loads(first.removeprefix("\ufeff"))  # a byte order mark, which `datasets` skips too
    except json.JSONDecodeError:
        first_row = None
    if isinstance(first_row, dict) and more:
        return True
    try:
        document = json.loads("".join(text for _, text in text_lines(file)).removeprefix("\ufeff"))
    except json.JSONDecodeError as error:
        raise DataError(
            f"{key}: cannot read '{file}' as json: line {error.lineno} is not valid JSON ({where_json_breaks(error)})."
        ) from None
    records = '[{"field": ...}, ...]'
    if isinstance(document, list):
        if not document:
            raise DataError(f"{key}: '{file}' is an empty JSON list: give a list of records ({records}).")
        if not all(isinstance(item, str) for item in document):  # strings: `datasets` reads rows of one column, `text`
            for number, item in enumerate(document, start=1):
                if not isinstance(item, dict):
                    raise DataError(
                        f"{key}: '{file}': item {number} of the JSON list is a JSON {type(item).__name__}, not an "
                        'object of fields ({"field": ...}).'
                    )
    elif isinstance(document, dict):
        if looks_columnar(document):  # else one record (nested fields and all): one row
            raise DataError(
                f"{key}: '{file}' holds one JSON object of columns or lists, which would be read as one row: write a "
                f"list of records ({records}) or JSON lines, one record per line (pandas: to_json(orient='records', "
                "lines=True))."
            )
    else:
        raise DataError(f"{key}: '{file}' holds a JSON {type(document).__name__}: give a list of records ({records}).")
    return False


def looks_columnar(document: dict[str, Any]) -> bool:
    """A JSON object of columns rather than one record: every value a list (`{"field": [v0, v1, ...]}`), every value
    an object keyed by row numbers (pandas' default `to_json()`), or records wrapped in an object (`{"version": 2,
    "data": [records]}`; a record holding a list of records, such as one conversation, reads so too)."""
    values = list(document.values())
    lists = all(isinstance(value, list) for value in values)
    numbered = all(isinstance(value, dict) and value and all(key.isdigit() for key in value) for value in values)
    wrapped = any(
        isinstance(value, list) and value and all(isinstance(item, dict) for item in value) for value in values
    )
    return bool(values) and (lists or numbered or wrapped)


@contextmanager
def builder_errors_unlogged() -> Iterator[None]:
    """`datasets`' file builders log a row they cannot parse as an ERROR, then raise: the DataError raised in its
    place says it once, counting lines from 1."""
    builders = logging.getLogger("datasets.packaged_modules")
    level = builders.level
    builders.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        builders.setLevel(level)


def prepared_builder(
    builder: str,
    split: str,
    file: Path,
    cache_dir: str | None,
    kwargs: dict[str, Any],
    key: str,
    shown: Path | None = None,
) -> datasets.DatasetBuilder:
    """`datasets.load_dataset`'s steps up to the row count, so that a split of none fails with our own message; a
    file it cannot parse is named as `shown` (default `file`)."""
    try:
        with builder_errors_unlogged():
            loader = datasets.load_dataset_builder(
                builder, data_files={split: str(file.resolve())}, cache_dir=cache_dir, **kwargs
            )
            loader.download_and_prepare()
    except Exception as error:  # datasets wraps parse errors in several exception types
        raise DataError(f"{key}: cannot read '{shown or file}' as {builder}: {error.__cause__ or error}") from error
    return loader


def load_file(split: str, path: str, cache_dir: str | None, key: str | None = None) -> Dataset:
    """One split from a local file; errors name `key` (default `data.<split>_file`)."""
    key = key or f"data.{split}_file"
    file = existing_file(path, key)
    builder, kwargs = file_format(file, key)
    if builder != "parquet":
        check_text_file(file, key)
    json_lines = builder == "json" and (data_suffix(file) == ".jsonl" or check_json_file(file, key))
    if builder == "csv":
        kwargs = text_columns(file, kwargs)
    try:
        loader = prepared_builder(builder, split, file, cache_dir, kwargs, key)
    except DataError as error:
        if builder == "csv":
            raise DataError(f"{error}{where_csv_breaks(file, kwargs)}") from error
        copy = json_lines and records_only(file, key, cache_dir)
        if not copy:
            raise
        loader = prepared_builder(builder, split, copy, cache_dir, kwargs, key, shown=file)
    if not loader.info.splits[split].num_examples:
        raise DataError(
            f"{key}: '{path}' holds no rows (a header alone, or records without fields): give at least one row."
        )
    return loader.as_dataset(split=split)


def load_hub(name: str, config: str | None, cache_dir: str | None) -> DatasetDict:
    """The real Hub code path; offline it uses the local cache only, and says what to do if that is empty."""
    alternative = (
        "Use local files instead: data.train_file=PATH [data.validation_file=PATH data.test_file=PATH], "
        "or data.data_dir=FOLDER with train/validation/test files (jsonl, json, csv, tsv or parquet)."
    )
    try:
        if hub_reachable():
            return datasets.load_dataset(name, config, cache_dir=cache_dir)
        with offline_mode():
            return datasets.load_dataset(name, config, cache_dir=cache_dir)
    except ConnectionError as error:
        raise DataError(OFFLINE_HINT.format(name=name, alternative=alternative)) from error
    except (FileNotFoundError, ValueError) as error:
        raise DataError(f"data.dataset_name='{name}' (config {config!r}) could not be loaded: {error}") from error


class LoadedSplits(DatasetDict):
    """The raw train, validation and test splits, and which of them were `carved` from train."""

    carved: tuple[str, ...] = ()


def carve_missing_splits(
    splits: dict[str, Dataset], validation_fraction: float, test_fraction: float, seed: int
) -> LoadedSplits:
    """A missing validation or test split is a seeded, reproducible slice of train."""
    carved = []
    for split, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if split in splits:
            continue
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"data.{split}_fraction must be in (0, 1) to carve a {split} split, got {fraction}.")
        try:
            parts = splits["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
        except ValueError:  # a split left empty
            raise DataError(
                f"data.{split}_fraction={fraction} of the {len(splits['train'])} train rows leaves no row for train: "
                f"give more rows, or a data.{split}_file."
            ) from None
        splits["train"], splits[split] = parts["train"], parts["test"]
        carved.append(split)
        log.info("No %s split given: using %d examples of train (seed %d).", split, len(parts["test"]), seed)
    loaded = LoadedSplits({split: splits[split] for split in SPLITS})
    loaded.carved = tuple(carved)
    return loaded


def keep_train_fraction(splits: LoadedSplits, fraction: float | None, seed: int) -> LoadedSplits:
    """A seeded, reproducible `fraction` of the train rows (a learning curve's low-label points); validation and test,
    carved first, stay whole. Nested: a smaller fraction keeps a subset of a larger one's rows."""
    if fraction is None or fraction == 1.0:
        return splits
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"data.train_fraction must be in (0, 1], got {fraction!r}.")
    train = splits["train"]
    kept = max(1, round(fraction * len(train)))
    splits["train"] = train.shuffle(seed=seed).select(range(kept))
    log.info("data.train_fraction=%s: training on %d of %d train rows (seed %d).", fraction, kept, len(train), seed)
    return splits


def load_splits(
    *,
    data_dir: str | None,
    train_file: str | None,
    validation_file: str | None,
    test_file: str | None,
    dataset_name: str | None,
    dataset_config: str | None,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
    train_fraction: float | None = None,
    cache_dir: str | None = None,
    needed: Sequence[str] = SPLITS,
) -> LoadedSplits:
    """Explicit files win over `data_dir`, which wins over a Hub dataset: a `train_file` replaces them, a
    validation or test file alone replaces that split of theirs (`eval.py data.test_file=...` on a checkpoint
    trained on `data_dir`). Where the `needed` splits are evaluation splits with files of their own, only those are
    read (the run's train data may be gone)."""
    explicit = {s: f for s, f in zip(SPLITS, (train_file, validation_file, test_file), strict=True) if f}
    if "train" not in needed and set(needed) <= explicit.keys():
        return LoadedSplits({split: load_file(split, explicit[split], cache_dir) for split in needed})
    if "train" in explicit:
        if data_dir:
            log.info("data.train_file is set, so data.data_dir (%s) is not used.", data_dir)
        splits: dict[str, Dataset] = {}
    elif data_dir:
        splits = {split: load_file(split, path, cache_dir) for split, path in files_in_dir(data_dir).items()}
    elif dataset_name:
        hub = load_hub(dataset_name, dataset_config, cache_dir)
        splits = {SPLIT_ALIASES.get(name, name): data for name, data in hub.items()}
        if "train" not in splits:
            raise DataError(f"Hub dataset '{dataset_name}' has no train split (it has: {', '.join(hub)}).")
    elif explicit:
        raise ConfigError(
            "data.train_file is required when data.validation_file or data.test_file is set without data.data_dir "
            "or data.dataset_name to take the other splits from."
        )
    else:
        raise ConfigError(
            "No data configured: set data.train_file, data.data_dir or data.dataset_name (see conf/data/)."
        )
    for split, path in explicit.items():
        if split in splits:
            log.info("data.%s_file replaces the %s split of %s.", split, split, data_dir or dataset_name)
        splits[split] = load_file(split, path, cache_dir)
    splits = carve_missing_splits(splits, validation_fraction, test_fraction, split_seed)
    return keep_train_fraction(splits, train_fraction, split_seed)


# The data config keys that say where the raw splits come from (`conf/data/files.yaml`).
SOURCE_KEYS = (
    "data_dir",
    "train_file",
    "validation_file",
    "test_file",
    "dataset_name",
    "dataset_config",
    "validation_fraction",
    "test_fraction",
    "split_seed",
    "train_fraction",
)


def load_configured_splits(
    settings: Mapping[str, Any], cache_dir: str | None = None, needed: Sequence[str] = SPLITS
) -> LoadedSplits:
    """The raw splits a data config (or a data module's hyperparameters) names, loaded and carved as the data module
    does: what another tool needs to see exactly the rows a run trains, validates and tests on."""
    return load_splits(**{key: settings.get(key) for key in SOURCE_KEYS}, cache_dir=cache_dir, needed=needed)
