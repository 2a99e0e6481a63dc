"""Build the pretraining corpus: unlabelled text this machine reaches offline, with every held-out text kept out.

Sources (rows `{"id", "source", "lang", "text"}`):

* ``ddtp``: Debian package descriptions in every language the Debian Description Translation Project has (the
  ``Translation-*`` indexes apt keeps once ``apt-get -o Acquire::Languages=... update`` has run), one row per
  description: synopsis, then its paragraphs, one per line.
* ``manpages``: the train split of the embedded `manpages` corpus (NAME's description, then the page).
* ``chitchat``: the train conversations of the `chitchat-dataset` package, one turn per line, carved exactly as
  `data=chitchat` carves them (its fractions and `split_seed`).

Left out, and counted in ``stats.json``:

* reserved for external evaluation: descriptions whose ``Description-md5`` starts with ``0`` (every language; the
  man pages and chatterbot texts reserved the same way never enter the embedded corpora this reads);
* every task's validation and test text: descriptions (in every language) whose md5 is a held-out `ddtp_en_de`
  pair's, or would be one of an English→X corpus built the same way for any other language X (so a pair of your own
  choosing tests on unread text), whose English first paragraph opens a held-out `debian_summaries` family, or whose
  synopsis or a paragraph is a held-out source or target verbatim; the man pages and conversations of those splits.

The corpus's own validation and test splits (for the pretraining loss) are the rows ranked first by a stable hash of
their ids, so a rebuild from the same sources is byte-identical.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from weaver.corpora.debian import (
    Description,
    build_translation,
    family_key,
    load_descriptions,
    normalise,
    release_date,
)
from weaver.corpora.shipped import (
    SPLITS,
    Row,
    is_reserved,
    read_jsonl_gz,
    report_build,
    split_rank,
    write_splits,
)
from weaver.errors import DataError

DDTP_LANGUAGES = (
    "en,ca,cs,da,de,el,eo,es,eu,fi,fr,gl,hr,hu,id,it,ja,km,ko,nb,nl,pl,pt,pt_BR,ro,ru,sk,sr,sv,tr,uk,vi,zh_CN,zh_TW"
)
REFRESH_COMMAND = f'apt-get -o Acquire::Languages="{DDTP_LANGUAGES}" update'
TRANSLATION_INDEX = re.compile(r"_i18n_Translation-(?P<lang>[A-Za-z_%0-9]+?)(\.\w+)?$")
HELD_OUT_ROWS = 1000
LICENCES = {
    "ddtp": "Debian package descriptions and their DDTP translations, redistributed as part of the Debian archive; "
    "each description follows its package's licence, and DDTP translations are distributed on the same terms.",
    "manpages": "Linux man-pages project pages as packaged by Debian, each under its own free licence (see the "
    "embedded manpages corpus's copyright file).",
    "chitchat": "BYU PCC lab's Chit-Chat Challenge conversations, shipped in the chitchat-dataset package (MIT).",
}


def translation_indexes(lists_dir: Path) -> dict[str, list[Path]]:
    """Every language's Translation indexes (``pt%5fBR`` in a file name is ``pt_BR``), each list sorted."""
    found: dict[str, list[Path]] = {}
    if lists_dir.is_dir():
        for path in sorted(lists_dir.iterdir()):
            if match := TRANSLATION_INDEX.search(path.name):
                found.setdefault(match["lang"].replace("%5f", "_"), []).append(path)
    return found


class HeldOut:
    """What no pretraining row may contain: the embedded corpora's validation and test texts."""

    def __init__(self, resources_dir: Path) -> None:
        self.md5s: set[str] = set()
        self.families: set[str] = set()
        self.texts: set[str] = set()
        for split in ("validation", "test"):
            for row in read_jsonl_gz(resources_dir / "ddtp_en_de" / f"{split}.jsonl.gz"):
                self.md5s.add(row["id"].partition("-")[0])
                self.texts.update(normalise(row[key]) for key in ("en", "de"))
            for row in read_jsonl_gz(resources_dir / "debian_summaries" / f"{split}.jsonl.gz"):
                self.md5s.add(row["id"])
                self.families.add(family_key(row["document"]))
                self.texts.add(normalise(row["summary"]))
                self.texts.update(normalise(line) for line in row["document"].split("\n"))
            for row in read_jsonl_gz(resources_dir / "manpages" / f"{split}.jsonl.gz"):
                self.texts.add(normalise(row["summary"]))
        self.texts.discard("")

    def add_translation_splits(self, by_language: dict[str, dict[str, Description]]) -> None:
        """Hold out, too, what the validation and test splits of an English→X pair corpus built the same way as
        `ddtp_en_de` (`weaver.corpora.debian.build_translation`) would be, for every language X: a corpus of your
        own language pair then tests on text the pretrained model never read."""
        english = by_language.get("en", {})
        for lang, descriptions in by_language.items():
            if lang != "en":  # rows keyed as English->German: only their ids (md5s) are read, and "id" is a language
                splits = build_translation(english, descriptions).splits
                self.md5s.update(
                    row["id"].partition("-")[0] for split in ("validation", "test") for row in splits[split]
                )

    def reason(self, description: Description, english: Description | None) -> str | None:
        """Why a description must stay out, or None."""
        if is_reserved(description.md5):
            return "reserved_md5"
        if description.md5 in self.md5s:
            return "held_out_md5"
        if english is not None and family_key("\n".join(english.paragraphs)) in self.families:
            return "held_out_family"
        if any(text in self.texts for text in (description.synopsis, *description.paragraphs)):
            return "held_out_text"
        return None


def ddtp_rows(indexes: dict[str, list[Path]], held_out: HeldOut, dropped: Counter[str]) -> list[Row]:
    by_language = {lang: load_descriptions(paths, lang) for lang, paths in indexes.items()}
    held_out.add_translation_splits(by_language)
    english = by_language.get("en", {})
    rows = []
    for lang in sorted(by_language):
        for md5, description in sorted(by_language[lang].items()):
            if reason := held_out.reason(description, english.get(md5)):
                dropped[f"ddtp_{reason}"] += 1
                continue
            text = "\n".join(part for part in (description.synopsis, *description.paragraphs) if part)
            if text:
                rows.append({"id": f"ddtp-{lang}-{md5}", "source": "ddtp", "lang": lang, "text": text})
    return rows


def manpage_rows(resources_dir: Path) -> list[Row]:
    return [
        {
            "id": f"manpages-{row['name']}",
            "source": "manpages",
            "lang": "en",
            "text": f"{row['summary']}\n{row['document']}",
        }
        for row in read_jsonl_gz(resources_dir / "manpages" / "train.jsonl.gz")
    ]


def chitchat_rows(cache_dir: str | None) -> list[Row]:
    """The train conversations as `data=chitchat` carves them (same file, fractions and seed)."""
    from omegaconf import OmegaConf

    from weaver.config import config_dir
    from weaver.corpora.chitchat import chitchat_file
    from weaver.data.sources import load_configured_splits

    data = OmegaConf.merge(*(OmegaConf.load(config_dir() / "data" / name) for name in ("files.yaml", "chitchat.yaml")))
    settings = {**OmegaConf.to_container(data), "train_file": chitchat_file(cache_dir)}
    splits = load_configured_splits(settings, cache_dir)
    rows = []
    for conversation in splits["train"]:
        text = "\n".join(turn["text"] for turn in conversation["turns"] if turn["text"])
        if text:
            rows.append({"id": f"chitchat-{conversation['id']}", "source": "chitchat", "lang": "en", "text": text})
    return rows


def split_rows(rows: list[Row]) -> dict[str, list[Row]]:
    """Validation, then test, take the rows ranked first by a hash of their ids; train keeps the rest (id order)."""
    ranked = sorted(rows, key=lambda row: split_rank(row["id"]))
    splits = {
        "validation": ranked[:HELD_OUT_ROWS],
        "test": ranked[HELD_OUT_ROWS : 2 * HELD_OUT_ROWS],
        "train": ranked[2 * HELD_OUT_ROWS :],
    }
    return {split: sorted(splits[split], key=lambda row: row["id"]) for split in SPLITS}


def word_counts(rows: list[Row]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for row in rows:
        counts[f"{row['source']}/{row['lang']}"] += len(row["text"].split())
    return dict(sorted(counts.items()))


def build(lists_dir: Path, resources_dir: Path, output_dir: Path, cache_dir: str | None) -> Path:
    """Read every source, drop the held-out texts, write the splits and the manifest; return the corpus folder."""
    indexes = translation_indexes(lists_dir)
    if "en" not in indexes:
        raise DataError(f"no Translation-en files in {lists_dir}; run: {REFRESH_COMMAND}")
    dropped: Counter[str] = Counter()
    rows = ddtp_rows(indexes, HeldOut(resources_dir), dropped) + manpage_rows(resources_dir) + chitchat_rows(cache_dir)
    splits = split_rows(rows)
    stats = {
        "corpus": "pretraining",
        "counts": {split: len(splits[split]) for split in SPLITS},
        "train_words": word_counts(splits["train"]),
        "dropped": dict(sorted(dropped.items())),
        "sources": [
            {"file": path.name, "release_date": release_date(path)} for paths in indexes.values() for path in paths
        ],
        "excluded": [
            "descriptions whose Description-md5 starts with '0', in every language",
            "every language of a description whose md5, English family or text is in a held-out split of "
            "ddtp_en_de or debian_summaries, or whose md5 is in a held-out split of the English->X pairs built the "
            "same way for any language X",
            "the validation and test splits of manpages and chitchat",
        ],
        "licences": LICENCES,
    }
    return write_splits(output_dir / "pretraining", splits, stats)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user-fixable problems print one line, not a traceback."""
    from weaver.config import resource_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists-dir", type=Path, default=Path("/var/lib/apt/lists"))
    parser.add_argument("--resources-dir", type=Path, default=Path(resource_path("ddtp_en_de")).parent)
    parser.add_argument("--output-dir", type=Path, default=Path("data"))
    parser.add_argument("--cache-dir", default=None, help="where chitchat's JSONL is written (the runs' cache)")
    args = parser.parse_args(argv)
    return report_build(lambda: [build(args.lists_dir, args.resources_dir, args.output_dir, args.cache_dir)])


if __name__ == "__main__":
    sys.exit(main())
