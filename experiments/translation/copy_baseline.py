"""Score the copy baseline (the English source, unchanged, as the German translation) on a DDTP split.

python experiments/translation/copy_baseline.py [--split test]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from weaver.cli.config import resource_path
from weaver.metrics.translation import translation_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    args = parser.parse_args()
    path = Path(resource_path("ddtp_en_de")) / f"{args.split}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    scores, signatures = translation_scores([row["en"] for row in rows], [row["de"] for row in rows])
    print(json.dumps({"split": args.split, "examples": len(rows), **scores, "signatures": signatures}, indent=2))


if __name__ == "__main__":
    main()
