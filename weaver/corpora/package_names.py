"""Package names for the `debian_summaries` corpus, whose rows are keyed by `Description-md5`.

apt's `Packages` indexes (under /var/lib/apt/lists) give each binary package's name and the md5 of its
description; a description shared by several packages takes the first name in sorted order. The names are written
beside the corpus as `package_names.json.gz` ({row id: name}, sorted, zero gzip mtime: byte-identical when rebuilt
from the same indexes), which the recall set reads as its keys (`conf/data/recall_set.yaml`). Rows whose
description no index names are counted and left out.

    python -m weaver.corpora.package_names --lists-dir /var/lib/apt/lists \
        --corpus-dir weaver/data/resources/debian_summaries
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

from weaver.corpora.debian import iter_stanzas, read_index
from weaver.corpora.shipped import SPLITS
from weaver.errors import DataError

NAMES_FILE = "package_names.json.gz"
PACKAGES_INDEX = re.compile(r"_binary-[a-z0-9]+_Packages(\.\w+)?$")


def find_packages_files(lists_dir: Path) -> list[Path]:
    """Every binary `Packages` index, sorted so reading order is stable."""
    if not lists_dir.is_dir():
        return []
    return sorted(p for p in lists_dir.iterdir() if p.is_file() and PACKAGES_INDEX.search(p.name))


def names_by_description(files: list[Path]) -> dict[str, str]:
    """{Description-md5: the first package name, in sorted order, whose description it is}."""
    names: dict[str, str] = {}
    for path in files:
        for stanza in iter_stanzas(read_index(path)):
            md5, name = stanza.get("Description-md5"), stanza.get("Package")
            if md5 and name and (md5 not in names or name < names[md5]):
                names[md5] = name
    return names


def write_names(corpus_dir: Path, names: dict[str, str]) -> tuple[int, int]:
    """Write the names of the corpus's rows; return (named rows, rows without a name)."""
    ids = []
    for split in SPLITS:
        path = corpus_dir / f"{split}.jsonl.gz"
        if not path.is_file():
            raise DataError(f"{path} does not exist: --corpus-dir must hold the corpus's train/validation/test files.")
        with gzip.open(path, "rt", encoding="utf-8") as rows:
            ids += [json.loads(line)["id"] for line in rows]
    named = {row_id: names[row_id] for row_id in sorted(ids) if row_id in names}
    text = json.dumps(named, ensure_ascii=False, indent=0, sort_keys=True) + "\n"
    (corpus_dir / NAMES_FILE).write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    missing = sum(row_id not in names for row_id in ids)
    return len(ids) - missing, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists-dir", type=Path, default=Path("/var/lib/apt/lists"))
    parser.add_argument("--corpus-dir", type=Path, default=Path("weaver/data/resources/debian_summaries"))
    args = parser.parse_args(argv)
    try:
        files = find_packages_files(args.lists_dir)
        if not files:
            raise DataError(f"no Packages indexes in {args.lists_dir}; run: apt-get update")
        named, missing = write_names(args.corpus_dir, names_by_description(files))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.corpus_dir / NAMES_FILE}: {named} rows named, {missing} without a package name")
    return 0


if __name__ == "__main__":
    sys.exit(main())
