"""Build small embedded corpora from Debian package descriptions.

Source: the Debian Description Translation Project (DDTP) index files
(``dists/*/main/i18n/Translation-en`` and ``Translation-de``) that apt keeps
under ``/var/lib/apt/lists`` once ``apt-get -o Acquire::Languages="en,de"
update`` has run. English and German stanzas describe the same text when they
share a ``Description-md5``.

Two corpora are written (the embedded ones; `--target-language fr` writes ``ddtp_en_fr`` alone, the same way):

* ``ddtp_en_de``: English→German pairs of one-line synopses and of long
  description paragraphs (paragraphs only where both languages have the same
  number of them, so the one-to-one alignment is trustworthy).
* ``debian_summaries``: English long description (document) → synopsis
  (summary).

Descriptions whose md5 starts with ``0`` are left out of both corpora: they are
reserved for external evaluation. Splits are chosen by a stable hash: of the md5
for translation (per description), and of the normalised first paragraph for
summaries (per package family: ``libfoo1``, ``libfoo-dev`` and ``foo-doc`` repeat
the paragraph that introduces foo, so hashing md5s would put foo's boilerplate on
both sides of the split). Files are written sorted with a zero gzip mtime, so
rebuilding from the same apt lists gives byte-identical files. The summaries
train split is capped (a hash-ordered subsample) to keep the corpus small.

Licence: package descriptions and their DDTP translations are redistributed as
part of the Debian archive. Each description follows the licence of its
package, and DDTP translations are distributed on the same terms as the
descriptions they translate. These files add no licence of their own.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from weaver.corpora.shipped import (
    RESERVED_MD5_PREFIX,
    SPLITS,
    Row,
    is_reserved,
    report_build,
    split_rank,
    write_splits,
)
from weaver.errors import DataError

APT_HELPER = "/usr/lib/apt/apt-helper"
REFRESH_COMMAND = 'apt-get -o Acquire::Languages="en,de" update'
# apt's own compressions; anything else is read as plain text (test fixtures).
COMPRESSED_SUFFIXES = frozenset({".lz4", ".gz", ".xz", ".bz2", ".lzma", ".zst"})
HELD_OUT_TARGET = 1000
MIN_DOCUMENT_WORDS = 40
# Keeps debian_summaries a few MB; the full train split would be about 7 MB.
MAX_SUMMARY_TRAIN_ROWS = 12000
LICENCE_NOTE = (
    "Debian package descriptions and their DDTP translations, redistributed as "
    "part of the Debian archive; each description follows its package's licence, "
    "and DDTP translations are distributed on the same terms as the descriptions "
    "they translate."
)


@dataclass(frozen=True)
class Description:
    """One package description: synopsis line plus long-description paragraphs."""

    md5: str
    synopsis: str
    paragraphs: tuple[str, ...]


@dataclass
class Corpus:
    """Rows per split plus the reasons items were dropped, for stats.json."""

    name: str
    splits: dict[str, list[Row]]
    dropped: Counter[str]


def find_translation_files(lists_dir: Path, lang: str) -> list[Path]:
    """Return every Translation-<lang> index, sorted so reading order is stable.

    The exact-language match keeps e.g. ``Translation-en_GB`` out of ``en``.
    """
    pattern = re.compile(rf"_i18n_Translation-{re.escape(lang)}(\.\w+)?$")
    if not lists_dir.is_dir():
        return []
    return sorted(p for p in lists_dir.iterdir() if p.is_file() and pattern.search(p.name))


def read_index(path: Path) -> str:
    """Read an index file, letting apt-helper undo whatever compression apt used."""
    if path.suffix not in COMPRESSED_SUFFIXES:
        return path.read_text(encoding="utf-8")
    try:
        result = subprocess.run([APT_HELPER, "cat-file", str(path)], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise DataError(f"cannot decompress {path} with {APT_HELPER}: {err}") from err
    return result.stdout.decode("utf-8")


def iter_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse RFC822-style stanzas; continuation lines keep their leading space."""
    for block in re.split(r"\n\s*\n", text):
        stanza: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                stanza[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
        if stanza:
            yield stanza


def normalise(text: str) -> str:
    """Collapse all whitespace so line wrapping never distinguishes two texts."""
    return " ".join(text.split())


def parse_description(md5: str, value: str) -> Description:
    """Split a Description field into synopsis and paragraphs.

    A continuation line of just "." separates paragraphs. Verbatim lines (two or
    more leading spaces: lists, code) stay in their paragraph and are joined like
    any other line, so a bullet list counts as one paragraph in both languages.
    """
    synopsis, *body = value.split("\n")
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    joined = (normalise(" ".join(lines)) for lines in paragraphs)
    return Description(md5, normalise(synopsis), tuple(p for p in joined if p))


def load_descriptions(files: Iterable[Path], lang: str) -> dict[str, Description]:
    """Map md5 → description; the first stanza per md5 wins (packages share md5s)."""
    field_name = f"Description-{lang}"
    descriptions: dict[str, Description] = {}
    for path in files:
        for stanza in iter_stanzas(read_index(path)):
            md5 = stanza.get("Description-md5")
            if md5 and field_name in stanza and md5 not in descriptions:
                descriptions[md5] = parse_description(md5, stanza[field_name])
    return descriptions


def row_order(row: Row) -> tuple[str, int]:
    """Sort key: by md5, then numerically by pair index (so -10 follows -9)."""
    md5, _, index = row["id"].partition("-")
    return md5, int(index or 0)


def family_key(document: str) -> str:
    """The split group of a summaries document: its first paragraph, casefolded, whitespace collapsed.

    Package families repeat the paragraph that introduces the software and differ in the rest
    ("This package contains the development files."), so whole families land in one split.
    """
    return normalise(document.split("\n", 1)[0].casefold())


def assign_splits(groups: dict[str, list[Row]], target: int, leak_key: Callable[[Row], str]) -> dict[str, list[Row]]:
    """Fill validation, then test, with whole groups in hash order of their keys.

    A group is a description (translation) or a package family (summaries);
    keeping its rows together stops paragraphs or shared boilerplate from
    straddling splits. Only rows whose leak key belongs to no other group count
    towards ``target``: the rest mostly reappear in train and are dropped later,
    so counting them would leave the held-out splits well short of ``target``.
    """
    owners = Counter(key for rows in groups.values() for key in {leak_key(r) for r in rows})
    splits: dict[str, list[Row]] = {name: [] for name in SPLITS}
    filled: Counter[str] = Counter()
    for group in sorted(groups, key=split_rank):
        name = next((s for s in ("validation", "test") if filled[s] < target), "train")
        splits[name].extend(groups[group])
        filled[name] += len({leak_key(r) for r in groups[group] if owners[leak_key(r)] == 1})
    return splits


def dedupe(rows: list[Row], key: Callable[[Row], object]) -> list[Row]:
    """Keep the first row, in id order, for each key."""
    seen: set[object] = set()
    kept = []
    for row in sorted(rows, key=row_order):
        if key(row) not in seen:
            seen.add(key(row))
            kept.append(row)
    return kept


def finalise(
    name: str,
    groups: dict[str, list[Row]],
    dedupe_key: Callable[[Row], object],
    leak_key: Callable[[Row], str],
    dropped: Counter[str],
    max_train_rows: int | None = None,
) -> Corpus:
    """Split, dedupe within each split, remove held-out leaks, then cap train.

    A held-out row is dropped when its source text already occurs in train (or,
    for test, in validation), so scores never reward memorising training text.
    Train is capped last so that validation and test do not depend on the cap.
    """
    splits = assign_splits(groups, HELD_OUT_TARGET, leak_key)
    for split in SPLITS:
        kept = dedupe(splits[split], dedupe_key)
        dropped["rows_duplicate"] += len(splits[split]) - len(kept)
        splits[split] = kept
    seen = {leak_key(row) for row in splits["train"]}
    for split in ("validation", "test"):
        kept = [row for row in splits[split] if leak_key(row) not in seen]
        dropped[f"rows_{split}_seen_in_earlier_split"] += len(splits[split]) - len(kept)
        splits[split] = kept
        seen.update(leak_key(row) for row in kept)
    if max_train_rows is not None:
        ranked = sorted(splits["train"], key=lambda row: split_rank(row_order(row)[0]))
        dropped["rows_over_train_cap"] += max(0, len(ranked) - max_train_rows)
        splits["train"] = ranked[:max_train_rows]
    return Corpus(name, splits, dropped)


def paragraphs_align(en: Description, de: Description) -> bool:
    """Equal paragraph counts are the only evidence that paragraph i matches i."""
    return len(en.paragraphs) == len(de.paragraphs)


def translation_rows(en: Description, other: Description, lang: str = "de") -> list[Row]:
    """Synopsis pair (k=0) plus, when aligned, paragraph pairs (k=1..n); empties included."""
    pairs = [(en.synopsis, other.synopsis)]
    if paragraphs_align(en, other):
        pairs += zip(en.paragraphs, other.paragraphs, strict=True)
    return [{"id": f"{en.md5}-{k}", "en": src, lang: tgt} for k, (src, tgt) in enumerate(pairs)]


def build_translation(en: dict[str, Description], other: dict[str, Description], lang: str = "de") -> Corpus:
    """English→`lang` DDTP pairs (`ddtp_en_de` by default), split by description."""
    dropped: Counter[str] = Counter()
    groups: dict[str, list[Row]] = {}
    for md5 in sorted(other):
        if is_reserved(md5):
            dropped["descriptions_reserved_md5"] += 1
        elif md5 not in en:
            dropped["descriptions_without_english"] += 1
        else:
            if not paragraphs_align(en[md5], other[md5]):
                dropped["descriptions_paragraph_count_mismatch"] += 1
            rows = translation_rows(en[md5], other[md5], lang)
            groups[md5] = [row for row in rows if row["en"] and row[lang]]
            dropped["rows_empty_side"] += len(rows) - len(groups[md5])
    return finalise(f"ddtp_en_{lang.lower()}", groups, lambda r: (r["en"], r[lang]), lambda r: r["en"], dropped)


def build_summaries(en: dict[str, Description]) -> Corpus:
    """Long description → synopsis, for descriptions long enough to summarise.

    Split by package family (``family_key``), not by description: otherwise a third
    of the held-out documents open with a paragraph that a train document also has.
    """
    dropped: Counter[str] = Counter()
    groups: dict[str, list[Row]] = {}
    for md5 in sorted(en):
        description = en[md5]
        document = "\n".join(description.paragraphs)
        if is_reserved(md5):
            dropped["descriptions_reserved_md5"] += 1
        elif len(document.split()) < MIN_DOCUMENT_WORDS:
            dropped["descriptions_too_short"] += 1
        elif not description.synopsis:
            dropped["descriptions_empty_summary"] += 1
        else:
            row = {"id": md5, "document": document, "summary": description.synopsis}
            groups.setdefault(family_key(document), []).append(row)
    return finalise(
        "debian_summaries",
        groups,
        lambda r: r["document"],
        lambda r: r["document"],
        dropped,
        MAX_SUMMARY_TRAIN_ROWS,
    )


def release_date(index: Path) -> str | None:
    """Date of the (In)Release file an index came from, i.e. the archive snapshot."""
    candidates = [
        p
        for p in index.parent.glob("*Release")
        if p.name.endswith(("_InRelease", "_Release")) and index.name.startswith(p.name.rsplit("_", 1)[0] + "_")
    ]
    for release in sorted(candidates, key=lambda p: len(p.name), reverse=True):
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Date:"):
                return line.partition(":")[2].strip()
    return None


def write_corpus(corpus: Corpus, output_dir: Path, sources: list[Path]) -> Path:
    """Write the three splits plus stats.json; return the corpus directory."""
    stats = {
        "corpus": corpus.name,
        "counts": {split: len(corpus.splits[split]) for split in SPLITS},
        "dropped": dict(sorted(corpus.dropped.items())),
        "sources": [{"file": p.name, "release_date": release_date(p)} for p in sources],
        "excluded": f"descriptions whose Description-md5 starts with {RESERVED_MD5_PREFIX!r}",
        "licence": LICENCE_NOTE,
    }
    splits = {split: sorted(corpus.splits[split], key=row_order) for split in SPLITS}
    return write_splits(output_dir / corpus.name, splits, stats)


def build(lists_dir: Path, output_dir: Path, target_language: str = "de") -> list[Path]:
    """Read the apt lists and write the English→`target_language` pairs and, for German (the embedded corpora),
    the summaries; return their directories."""
    if target_language in ("en", "id"):  # a row is {"id", "en", <language>}: these would overwrite a column
        raise DataError(
            f"--target-language {target_language}: pairs from English into '{target_language}' cannot be built."
        )
    files = {lang: find_translation_files(lists_dir, lang) for lang in ("en", target_language)}
    missing = [lang for lang, paths in files.items() if not paths]
    if missing:
        command = REFRESH_COMMAND.replace("en,de", f"en,{target_language}")
        raise DataError(f"no Translation-{'/'.join(missing)} files in {lists_dir}; run: {command}")
    en = load_descriptions(files["en"], "en")
    other = load_descriptions(files[target_language], target_language)
    pairs = build_translation(en, other, target_language)
    written = [write_corpus(pairs, output_dir, files["en"] + files[target_language])]
    if target_language == "de":
        written.append(write_corpus(build_summaries(en), output_dir, files["en"]))
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user-fixable problems print one line, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists-dir", type=Path, default=Path("/var/lib/apt/lists"))
    parser.add_argument("--output-dir", type=Path, default=Path("weaver/data/resources"))
    parser.add_argument(
        "--target-language",
        default="de",
        help="DDTP language of the pairs (fr, it, pt_BR, ...); other than de, only the pairs are written",
    )
    args = parser.parse_args(argv)
    return report_build(lambda: build(args.lists_dir, args.output_dir, args.target_language))


if __name__ == "__main__":
    sys.exit(main())
