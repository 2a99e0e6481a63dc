"""What every shipped corpus shares: the md5 bucket reserved for external evaluation, a split rank that does not
depend on reading order, and files that are byte-identical when rebuilt from the same sources."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weaver.errors import DataError

SPLITS = ("train", "validation", "test")
RESERVED_MD5_PREFIX = "0"

Row = dict[str, str]


def is_reserved(md5: str) -> bool:
    """md5s starting with "0" are kept back for external evaluation."""
    return md5.startswith(RESERVED_MD5_PREFIX)


def split_rank(key: str) -> str:
    """Stable pseudo-random rank of a split group (an md5, a family key), independent of key order."""
    return hashlib.sha256(f"weaver-split:{key}".encode()).hexdigest()


def write_jsonl_gz(path: Path, rows: list[Row]) -> None:
    """Write rows as gzip'd JSON lines with a zero mtime, so rebuilds are byte-identical."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def read_jsonl_gz(path: Path) -> list[Row]:
    """The rows of a gzip'd JSON-lines file, as `write_jsonl_gz` wrote them."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def write_splits(directory: Path, splits: dict[str, list[Row]], stats: dict[str, Any]) -> Path:
    """Write `<split>.jsonl.gz` (rows in the order given) and `stats.json` into `directory`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_jsonl_gz(directory / f"{split}.jsonl.gz", splits[split])
    (directory / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


def describe(directory: Path) -> str:
    """One summary line per corpus: split counts and compressed size."""
    stats = json.loads((directory / "stats.json").read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in directory.glob("*.jsonl.gz"))
    counts = ", ".join(f"{split}={n}" for split, n in stats["counts"].items())
    return f"{directory}: {counts} ({size / 1e6:.2f} MB compressed)"


def report_build(build: Callable[[], list[Path]]) -> int:
    """A corpus builder's CLI exit: each written corpus described in a line, or a user-fixable problem
    (`DataError`) as one line on stderr and exit status 1, never a traceback."""
    try:
        directories = build()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for directory in directories:
        print(describe(directory))
    return 0
