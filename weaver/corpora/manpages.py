"""Build the `manpages` corpus: Debian's Linux manual pages as long documents with one-line summaries.

Source: the English pages of the `manpages` and `manpages-dev` packages (the Linux man-pages project), i.e. the
files `dpkg -L` lists directly under ``/usr/share/man/man*/`` (translations live one folder deeper and are left
out). Each page is rendered to plain text with groff, as ``man`` would for a terminal but without overstrikes,
colour, hyphenation, justification or line wrapping. Its ``document`` is every section after NAME, headings
kept, one line per paragraph or preformatted line; its ``summary`` is NAME's description (for open.2, "open and
possibly create a file"). The NAME line itself never reaches the document, or the summary would be in the source.

Skipped and counted: symlinks and ``.so`` stubs (aliases of another page), pages without a NAME section or whose
NAME has no description, and documents identical to one already kept (the first in name order wins). Pages whose
file name's md5 starts with ``0`` (``hashlib.md5(b"open.2")``, the name without ``.gz``) are reserved for external
evaluation and left out. Splits rank page names by a stable hash: the first pages go to validation, the next to
test, the rest to train; files are written sorted with a zero gzip mtime, so rebuilding from the same package and
groff versions gives byte-identical files.

Licence: the pages carry their authors' licences, listed file by file in the packages' copyright file, which is
copied beside the corpus (the verbatim-copying licence of most pages asks processed versions to acknowledge
copyright and authors).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from weaver.corpora.shipped import RESERVED_MD5_PREFIX, SPLITS, Row, is_reserved, report_build, split_rank, write_splits
from weaver.errors import DataError

PACKAGES = ("manpages", "manpages-dev")
# Where dpkg lists the pages; --man-dir reads the same relative paths from elsewhere.
PACKAGED_MAN_DIR = Path("/usr/share/man")
ENGLISH_PAGE = re.compile(r"^man[^/]+/[^/]+$")
INSTALL_COMMAND = "apt-get install manpages manpages-dev groff-base"
# -t: tables; -Kutf8: UTF-8 source; -P-cbou: no bold/underline overstrikes or colour; -rHY=0: no hyphenation;
# -dAD=l: no justification (groff >= 1.23; older ones never justify an unwrapped line); -rLL: a line so long that a
# filled paragraph is one line; -rcR=1: one continuous page, so the only header and footer are the first and last line.
GROFF_COMMAND = ("groff", "-t", "-Kutf8", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-dAD=l", "-rLL=4000n", "-rcR=1")
HELD_OUT_PAGES = 150
# tbl's rules and borders: a ruled table's lines would otherwise be thousands of "─".
BOX_DRAWING = re.compile("[\u2500-\u257f]")
LICENCE_NOTE = (
    "Pages of the Linux man-pages project as packaged by Debian; each keeps its own free licence (mostly the "
    "verbatim-copying 'Linux-man-pages-copyleft', else GPL-2+/GPL-1+/GPL-2, BSD or Expat), listed file by file "
    "in the copyright file shipped beside this corpus."
)


class Skipped(Exception):
    """A page that yields no example; the message is the reason counted in stats.json."""


@dataclass
class Corpus:
    """Rows per split, the skip reasons, and how many pages were listed."""

    splits: dict[str, list[Row]]
    skipped: Counter[str]
    listed: int


def dpkg_query(*args: str) -> str:
    """stdout of `dpkg-query`; a missing package or dpkg is a one-line error naming the install command."""
    try:
        result = subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = (getattr(err, "stderr", "") or str(err)).strip().split("\n")[0]
        raise DataError(f"dpkg-query {' '.join(args)} failed ({detail}); run: {INSTALL_COMMAND}") from err
    return result.stdout


def package_pages(packages: list[str], man_dir: Path) -> list[Path]:
    """The packages' English pages (``man*/<file>``), sorted, as paths under `man_dir`."""
    listed = dpkg_query("-L", *packages).splitlines()
    relative = {Path(p).relative_to(PACKAGED_MAN_DIR) for p in listed if p.startswith(f"{PACKAGED_MAN_DIR}/")}
    pages = sorted(man_dir / p for p in relative if ENGLISH_PAGE.match(p.as_posix()))
    if not pages:
        raise DataError(f"packages {' '.join(packages)} list no English man pages under {PACKAGED_MAN_DIR}/man*/")
    return pages


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Each package's installed version, recorded because the pages change between versions."""
    return {package: dpkg_query("-W", "-f=${Version}", package) for package in packages}


def groff_version() -> str:
    """First line of `groff --version`, recorded because the rendering depends on it."""
    return subprocess.run(["groff", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


def page_name(path: Path) -> str:
    """``open.2`` for ``man2/open.2.gz``: the name the reserved bucket and the splits hash."""
    return path.name.removesuffix(".gz")


def read_source(path: Path) -> str:
    """The page's roff source, gunzipped when Debian installed it compressed."""
    if not path.is_file():
        raise DataError(f"{path} is listed by dpkg but missing; check --man-dir or reinstall: {INSTALL_COMMAND}")
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def is_alias(source: str) -> bool:
    """A ``.so`` stub: nothing but comments and one ``.so other/page`` request."""
    requests = [line for line in source.splitlines() if line.strip() and not re.match(r"^[.']\s*\\\"", line)]
    return len(requests) == 1 and re.match(r"^\.so\s", requests[0]) is not None


def render(source: str) -> str:
    """The page as plain UTF-8 text from groff."""
    try:
        result = subprocess.run(GROFF_COMMAND, input=source.encode("utf-8"), capture_output=True, check=True)
    except FileNotFoundError as err:
        raise DataError(f"groff is not installed; run: {INSTALL_COMMAND}") from err
    except subprocess.CalledProcessError as err:
        raise DataError(f"groff failed: {err.stderr.decode('utf-8', 'replace').strip()}") from err
    return result.stdout.decode("utf-8")


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, body lines) of rendered text: headings are the unindented lines (the page header comes first as
    one without a body); the footer (the last line, unindented), blank lines and table rules are dropped, and
    body lines lose their indentation and runs of spaces."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if lines and not lines[-1].startswith(" "):
        lines.pop()
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if not line.startswith(" "):
            found.append((line, []))
        elif found and (text := " ".join(BOX_DRAWING.sub(" ", line).split())):
            found[-1][1].append(text)
    return found


def parse_page(text: str) -> tuple[str, str]:
    """(summary, document) of a rendered page: NAME's text after the first " - ", and the sections after NAME."""
    found = sections(text)
    headings = [heading for heading, _ in found]
    if "NAME" not in headings:
        raise Skipped("no_name_section")
    start = headings.index("NAME")
    _, separator, summary = " ".join(found[start][1]).partition(" - ")
    if not separator or not summary.strip():
        raise Skipped("name_without_description")
    document = "\n".join(line for heading, body in found[start + 1 :] for line in (heading, *body))
    if not document:
        raise Skipped("empty_document")
    return summary.strip(), document


def page_row(path: Path) -> Row:
    """One example from a page file, or `Skipped` with the reason."""
    name = page_name(path)
    if path.is_symlink():
        raise Skipped("symlink")
    source = read_source(path)
    if is_alias(source):
        raise Skipped("so_link")
    if is_reserved(hashlib.md5(name.encode()).hexdigest()):
        raise Skipped("reserved_md5")
    summary, document = parse_page(render(source))
    return {"name": name, "section": name.rsplit(".", 1)[-1], "summary": summary, "document": document}


def build_corpus(pages: Iterable[Path]) -> Corpus:
    """Render and parse every page, drop repeated documents, and split by the rank of each page's name."""
    skipped: Counter[str] = Counter()
    rows: list[Row] = []
    seen: set[str] = set()
    ordered = sorted(pages, key=page_name)
    for path in ordered:
        try:
            row = page_row(path)
        except Skipped as reason:
            skipped[str(reason)] += 1
            continue
        if row["document"] in seen:
            skipped["duplicate_document"] += 1
            continue
        seen.add(row["document"])
        rows.append(row)
    ranked = sorted(rows, key=lambda row: split_rank(row["name"]))
    held_out = {"validation": ranked[:HELD_OUT_PAGES], "test": ranked[HELD_OUT_PAGES : 2 * HELD_OUT_PAGES]}
    splits = {**held_out, "train": ranked[2 * HELD_OUT_PAGES :]}
    return Corpus(
        {split: sorted(splits[split], key=lambda row: row["name"]) for split in SPLITS}, skipped, len(ordered)
    )


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles: exact values from the data, no interpolation."""
    ordered = sorted(values)
    if not ordered:
        return {}
    ranks = {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in (50, 90, 95, 99)}
    return {**ranks, "max": ordered[-1]}


def length_stats(rows: list[Row], field: str) -> dict[str, dict[str, int]]:
    return {
        "words": percentiles([len(row[field].split()) for row in rows]),
        "chars": percentiles([len(row[field]) for row in rows]),
    }


def write_corpus(corpus: Corpus, output_dir: Path, versions: dict[str, str], groff: str) -> Path:
    """The three splits and stats.json (counts, skips, lengths, versions)."""
    rows = [row for split in SPLITS for row in corpus.splits[split]]
    stats = {
        "corpus": "manpages",
        "counts": {split: len(corpus.splits[split]) for split in SPLITS},
        "pages_listed": corpus.listed,
        "skipped": dict(sorted(corpus.skipped.items())),
        "lengths": {field: length_stats(rows, field) for field in ("document", "summary")},
        "packages": versions,
        "groff": groff,
        "render_command": " ".join(GROFF_COMMAND),
        "excluded": f"pages whose file name (e.g. open.2) has an md5 starting with {RESERVED_MD5_PREFIX!r}",
        "licence": LICENCE_NOTE,
    }
    return write_splits(output_dir, corpus.splits, stats)


def write_copyright(packages: Iterable[str], directory: Path) -> None:
    """The packages' copyright files (each text once) beside the corpus: they name every page's authors."""
    paths = [Path("/usr/share/doc") / package / "copyright" for package in packages]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"no copyright file at {', '.join(missing)}; run: {INSTALL_COMMAND}")
    texts = dict.fromkeys(path.read_text(encoding="utf-8") for path in paths)
    (directory / "copyright").write_text("\n".join(texts), encoding="utf-8")


def build(man_dir: Path, output_dir: Path, packages: Iterable[str] = PACKAGES) -> Path:
    """List the packages' pages, build the corpus from those under `man_dir`, write it; return its directory."""
    if not man_dir.is_dir():
        raise DataError(f"--man-dir {man_dir} is not a directory; install the pages with: {INSTALL_COMMAND}")
    packages = list(packages)
    corpus = build_corpus(package_pages(packages, man_dir))
    directory = write_corpus(corpus, output_dir, package_versions(packages), groff_version())
    write_copyright(packages, directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user-fixable problems print one line, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--man-dir", type=Path, default=PACKAGED_MAN_DIR)
    parser.add_argument("--output-dir", type=Path, default=Path("weaver/data/resources/manpages"))
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), help="Debian packages whose pages to read")
    args = parser.parse_args(argv)
    return report_build(lambda: [build(args.man_dir, args.output_dir, args.packages)])


if __name__ == "__main__":
    sys.exit(main())
