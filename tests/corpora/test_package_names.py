"""The package names of the summaries corpus, read from apt's Packages indexes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from weaver.corpora import package_names

PACKAGES = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"


def write_corpus(folder: Path, ids: list[str]) -> Path:
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = "".join(json.dumps({"id": row_id, "document": "d", "summary": "s"}) + "\n" for row_id in ids)
        (folder / f"{split}.jsonl.gz").write_bytes(gzip.compress(rows.encode(), mtime=0))
    return folder


def test_each_row_gets_the_first_name_of_its_description_and_unnamed_rows_are_counted(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    stanzas = [("libfoo-dev", "aa"), ("libfoo1", "aa"), ("bar", "bb"), ("baz", "zz")]
    text = "".join(f"Package: {name}\nVersion: 1\nDescription-md5: {md5}\n\n" for name, md5 in stanzas)
    (lists / PACKAGES).write_text(text)
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("not an index")
    corpus = write_corpus(tmp_path / "corpus", ["aa", "bb", "cc"])

    files = package_names.find_packages_files(lists)
    assert [f.name for f in files] == [PACKAGES]
    named, missing = package_names.write_names(corpus, package_names.names_by_description(files))
    assert (named, missing) == (6, 3)  # in each of the three splits, "aa" and "bb" are named, "cc" is not
    names = json.loads(gzip.decompress((corpus / package_names.NAMES_FILE).read_bytes()))
    assert names == {"aa": "libfoo-dev", "bb": "bar"}
    first = (corpus / package_names.NAMES_FILE).read_bytes()
    package_names.write_names(corpus, package_names.names_by_description(files))
    assert (corpus / package_names.NAMES_FILE).read_bytes() == first  # byte-identical when rebuilt


def test_a_missing_corpus_or_index_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert package_names.main(["--lists-dir", str(tmp_path), "--corpus-dir", str(tmp_path)]) == 1
    assert "no Packages indexes" in capsys.readouterr().err


def test_the_shipped_names_cover_the_summaries_corpus() -> None:
    folder = Path(package_names.__file__).parents[1] / "data" / "resources" / "debian_summaries"
    names = json.loads(gzip.decompress((folder / package_names.NAMES_FILE).read_bytes()))
    with gzip.open(folder / "test.jsonl.gz", "rt") as rows:
        ids = [json.loads(line)["id"] for line in rows]
    assert sum(row_id in names for row_id in ids) / len(ids) > 0.98
