"""The pretraining corpus builder: every language's descriptions in, every held-out and reserved text out."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import compose_config
from tests.corpora.test_debian_corpus import md5_for, stanza, write_lists
from weaver.corpora import debian, pretraining
from weaver.corpora.shipped import write_jsonl_gz
from weaver.data.sources import load_configured_splits
from weaver.errors import DataError

FR_FILE = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-fr"
PT_BR_FILE = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-pt%5fBR"
MANPAGE = {"name": "tool.1", "section": "1", "summary": "run the tool", "document": "DESCRIPTION\nIt runs."}


def descriptions() -> list[dict]:
    reserved = {
        "package": "secret",
        "md5": md5_for("secret", reserved=True),
        "en": ["a reserved description", "Kept back for external evaluation of every model trained here."],
        "de": ["eine zurückgehaltene Beschreibung", "Für externe Auswertung zurückgehalten, in jeder Sprache."],
    }
    tools = [
        {
            "package": f"tool-{i}",
            "md5": md5_for(f"tool-{i}"),
            "en": [f"tool flavour number {i}", f"Flavour {i} of the tool does thing {i}.", f"It also does {i} more."],
            "de": [f"Werkzeugvariante Nummer {i}", f"Variante {i} des Werkzeugs macht Ding {i}.", f"Und {i} mehr."],
        }
        for i in range(40)
    ]
    return [*tools, reserved]


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict]]:
    """Embedded corpora built from the fixture lists (a few held-out rows each), a French and a pt_BR index beside
    them, and the pretraining corpus built from all of it (chitchat left out: tested against the package below)."""
    monkeypatch.setattr(debian, "HELD_OUT_TARGET", 3)
    monkeypatch.setattr(debian, "MIN_DOCUMENT_WORDS", 5)
    monkeypatch.setattr(pretraining, "HELD_OUT_ROWS", 2)
    monkeypatch.setattr(pretraining, "chitchat_rows", lambda cache_dir: [])
    items = descriptions()
    lists = write_lists(tmp_path / "lists", items)
    resources = tmp_path / "resources"
    debian.build(lists, resources)
    (resources / "manpages").mkdir()
    for split in debian.SPLITS:
        write_jsonl_gz(resources / "manpages" / f"{split}.jsonl.gz", [{**MANPAGE, "name": f"{split}.1"}])
    # French only for descriptions the embedded corpora train on: an English→French corpus holds out its own.
    french = [d for d in items if d["md5"] not in held_out_md5s(resources)]
    for name, lang, translated in ((FR_FILE, "fr", french), (PT_BR_FILE, "pt_BR", items)):
        text = "".join(stanza(d["package"], d["md5"], lang, f"{lang} {d['de'][0]}", d["de"][1:]) for d in translated)
        (lists / name).write_text(text, encoding="utf-8")
    folder = pretraining.build(lists, resources, tmp_path / "out", cache_dir=None)
    rows = [row for split in debian.SPLITS for row in read(folder / f"{split}.jsonl.gz")]
    return resources, rows


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def held_out_md5s(resources: Path) -> set[str]:
    md5s = set()
    for split in ("validation", "test"):
        md5s |= {row["id"].partition("-")[0] for row in read(resources / "ddtp_en_de" / f"{split}.jsonl.gz")}
        md5s |= {row["id"] for row in read(resources / "debian_summaries" / f"{split}.jsonl.gz")}
    return md5s


def test_every_language_is_read_and_held_out_or_reserved_descriptions_are_left_out_in_all(
    built: tuple[Path, list[dict]],
) -> None:
    resources, rows = built
    languages = {row["lang"] for row in rows if row["source"] == "ddtp"}
    assert languages == {"en", "de", "fr", "pt_BR"}
    held_out = held_out_md5s(resources)
    assert held_out  # the fixture has held-out descriptions to leave out
    md5s = {row["id"].rsplit("-", 1)[1] for row in rows if row["source"] == "ddtp"}
    assert not md5s & held_out
    assert not any(md5.startswith("0") for md5 in md5s)
    english = {md5 for md5 in md5s if f"ddtp-en-{md5}" in {row["id"] for row in rows}}
    assert english == {row["id"].rsplit("-", 1)[1] for row in rows if row["lang"] == "pt_BR"}  # kept in every language


def test_the_held_out_splits_of_a_pair_corpus_built_for_any_other_language_are_left_out(
    built: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    resources, rows = built
    indexes = pretraining.translation_indexes(tmp_path / "lists")
    english = debian.load_descriptions(indexes["en"], "en")
    french = debian.build_translation(english, debian.load_descriptions(indexes["fr"], "fr"), "fr").splits
    french_held_out = {row["id"].partition("-")[0] for split in ("validation", "test") for row in french[split]}
    assert french_held_out - held_out_md5s(resources)  # the French corpus holds out descriptions en→de does not
    md5s = {row["id"].rsplit("-", 1)[1] for row in rows if row["source"] == "ddtp"}
    assert not md5s & french_held_out


def test_no_held_out_text_appears_and_only_train_man_pages_are_read(built: tuple[Path, list[dict]]) -> None:
    resources, rows = built
    held_out_texts = {
        row["de"] for split in ("validation", "test") for row in read(resources / "ddtp_en_de" / f"{split}.jsonl.gz")
    }
    lines = {line for row in rows for line in row["text"].split("\n")}
    assert not lines & held_out_texts
    assert [row["id"] for row in rows if row["source"] == "manpages"] == ["manpages-train.1"]


def test_rebuilds_are_byte_identical_and_the_manifest_counts_what_was_left_out(
    built: tuple[Path, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources, _ = built
    first = tmp_path / "out" / "pretraining"
    again = pretraining.build(tmp_path / "lists", resources, tmp_path / "again", cache_dir=None)
    for name in ("train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz", "stats.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
    stats = json.loads((first / "stats.json").read_text())
    assert stats["dropped"]["ddtp_reserved_md5"] == 4  # the reserved description, in each of 4 languages
    assert stats["dropped"]["ddtp_held_out_md5"] > 0
    assert set(stats["licences"]) == {"ddtp", "manpages", "chitchat"}


def test_lists_without_english_descriptions_are_one_line_naming_the_apt_command(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    with pytest.raises(DataError, match=r"no Translation-en files .* run: apt-get -o Acquire::Languages="):
        pretraining.build(tmp_path / "lists", tmp_path, tmp_path / "out", cache_dir=None)


def test_conversations_are_the_train_split_data_chitchat_carves(tmp_path: Path) -> None:
    rows = pretraining.chitchat_rows(str(tmp_path))
    data = compose_config(["task=dialogue", f"paths.cache_dir={tmp_path}"]).data
    splits = load_configured_splits(data, str(tmp_path))
    ids = {row["id"].removeprefix("chitchat-") for row in rows}
    assert ids and ids <= set(splits["train"]["id"])
    assert not ids & (set(splits["validation"]["id"]) | set(splits["test"]["id"]))
