"""The man-pages corpus builder, on small roff pages written here and rendered by the real groff; and the shipped
corpus as `data=manpages` loads it."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import compose_config
from weaver.corpora import manpages
from weaver.data.sources import load_configured_splits

pytestmark = pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")

WIDGET = r""".TH WIDGET 3 2024-01-01 "Weaver tests"
.SH NAME
widget, widget_r \- frobnicate a widget
.SH SYNOPSIS
.nf
.B #include <widget.h>
.PP
.BI "int widget(int " n );
.fi
.SH DESCRIPTION
The
.BR widget ()
function frobnicates
.I n
widgets,
one after another.
.PP
A second paragraph.
.SS Limits
.TS
allbox;
l l.
one	two
.TE
.SH SEE ALSO
.BR gadget (3)
"""


def page(name: str, description: str = "do a thing", body: str = "") -> str:
    """A minimal page whose DESCRIPTION is unique to `name` unless `body` is given."""
    title, section = name.rsplit(".", 1)
    return (
        f'.TH {title.upper()} {section} 2024-01-01 "Weaver tests"\n.SH NAME\n{title} \\- {description}\n'
        f".SH DESCRIPTION\n{body or f'The {title} page says what {title} does.'}\n"
    )


def reserved_name() -> str:
    """The first `pageN.3` whose md5 starts with 0: a page kept back for external evaluation."""
    names = (f"page{i}.3" for i in itertools.count())
    return next(name for name in names if hashlib.md5(name.encode()).hexdigest().startswith("0"))


def write_pages(man_dir: Path, pages: dict[str, str]) -> list[Path]:
    """Write `{name: roff}` as gzip'd files under man<section>/, the way Debian installs them."""
    paths = []
    for name, roff in pages.items():
        path = man_dir / f"man{name.rsplit('.', 1)[1][0]}" / f"{name}.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(roff.encode(), mtime=0))
        paths.append(path)
    return paths


def kept_rows(corpus: manpages.Corpus) -> dict[str, dict[str, str]]:
    return {row["name"]: row for rows in corpus.splits.values() for row in rows}


def test_name_description_is_the_summary_and_the_sections_after_it_the_document() -> None:
    summary, document = manpages.parse_page(manpages.render(WIDGET))
    assert summary == "frobnicate a widget"
    assert document.split("\n") == [
        "SYNOPSIS",
        "#include <widget.h>",
        "int widget(int n);",
        "DESCRIPTION",
        "The widget() function frobnicates n widgets, one after another.",
        "A second paragraph.",
        "Limits",
        "one two",
        "SEE ALSO",
        "gadget(3)",
    ]


def test_rendered_text_has_no_overstrikes_escapes_or_hyphenated_words() -> None:
    word = "antidisestablishmentarianism"
    # Longer than groff's line, so the paragraph wraps: hyphenation would split a word there.
    body = f".B {word}\n" + f"{word} " * 160
    text = manpages.render(page("long.1", body=body))
    assert "\b" not in text and "\x1b" not in text
    assert set(manpages.parse_page(text)[1].split()) == {"DESCRIPTION", word}


def test_row_fields(tmp_path: Path) -> None:
    (path,) = write_pages(tmp_path, {"widget.3": WIDGET})
    row = manpages.page_row(path)
    assert (row["name"], row["section"], row["summary"]) == ("widget.3", "3", "frobnicate a widget")
    assert row["document"].startswith("SYNOPSIS\n")


def test_so_links_symlinks_and_pages_without_description_are_skipped_and_counted(tmp_path: Path) -> None:
    paths = write_pages(
        tmp_path,
        {
            "widget.3": WIDGET,
            "widget_r.3": '.\\" alias\n.so man3/widget.3\n',
            "untitled.3": '.TH UNTITLED 3 2024-01-01 "Weaver tests"\n.SH NAME\nuntitled\n.SH DESCRIPTION\nText.\n',
        },
    )
    alias = tmp_path / "man3" / "widget2.3.gz"
    alias.symlink_to("widget.3.gz")
    corpus = manpages.build_corpus([*paths, alias])
    assert list(kept_rows(corpus)) == ["widget.3"]
    assert corpus.skipped == {"so_link": 1, "symlink": 1, "name_without_description": 1}
    assert corpus.listed == 4


def test_pages_whose_name_md5_starts_with_0_are_left_out(tmp_path: Path) -> None:
    reserved = reserved_name()
    assert hashlib.md5(reserved.encode()).hexdigest().startswith("0")
    corpus = manpages.build_corpus(write_pages(tmp_path, {reserved: page(reserved), "open.2": page("open.2")}))
    assert list(kept_rows(corpus)) == ["open.2"]
    assert corpus.skipped == {"reserved_md5": 1}


def test_identical_documents_are_kept_once(tmp_path: Path) -> None:
    shared = "One page shared by a family of functions."
    pages = {name: page(name, body=shared) for name in ("cosh.3", "coshf.3")}
    corpus = manpages.build_corpus(write_pages(tmp_path, pages))
    assert list(kept_rows(corpus)) == ["cosh.3"]
    assert corpus.skipped == {"duplicate_document": 1}


def test_splits_depend_on_names_only_and_rebuilds_are_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manpages, "HELD_OUT_PAGES", 2)
    names = [f"tool{i}.1" for i in range(8) if not manpages.is_reserved(hashlib.md5(f"tool{i}.1".encode()).hexdigest())]
    paths = write_pages(tmp_path / "man", {name: page(name) for name in names})
    first, second = manpages.build_corpus(paths), manpages.build_corpus(reversed(paths))
    assert first.splits == second.splits
    assert [len(first.splits[split]) for split in manpages.SPLITS] == [len(names) - 4, 2, 2]
    versions = {"manpages": "1.0-1"}
    for name, corpus in (("a", first), ("b", second)):
        manpages.write_corpus(corpus, tmp_path / name, versions, "GNU groff version 1.0")
    for file in ("train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz", "stats.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / "test.jsonl.gz").read_bytes()[4:8] == bytes(4), "gzip mtime must be zero"


def test_cli_reports_a_missing_man_dir_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manpages.main(["--man-dir", str(tmp_path / "absent"), "--output-dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: --man-dir") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_shipped_corpus_loads_through_data_manpages_without_reserved_pages(tmp_path: Path) -> None:
    data = compose_config(["task=summarization", "data=manpages"]).data
    splits = load_configured_splits(data, str(tmp_path))
    stats = json.loads((Path(data.data_dir) / "stats.json").read_text(encoding="utf-8"))
    assert {split: len(rows) for split, rows in splits.items()} == stats["counts"]
    names = [name for rows in splits.values() for name in rows["name"]]
    assert not any(manpages.is_reserved(hashlib.md5(name.encode()).hexdigest()) for name in names)
    test = splits["test"]
    assert all(test[data.source_field]) and all(test[data.target_field])
    assert not any(document.startswith("NAME") for document in test[data.source_field])
