"""Tests for the DDTP corpus builder, on tiny plain-text Translation fixtures."""

from __future__ import annotations

import gzip
import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from weaver.corpora import debian

EN_FILE = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en"
DE_FILE = "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-de"
SHARED_EN = "This package contains the files shared by all flavours of the tool."
SHARED_DE = "Dieses Paket enthält die von allen Varianten gemeinsam genutzten Dateien."


def md5_for(name: str, reserved: bool = False) -> str:
    """A fake Description-md5 whose first digit is controlled (0 = reserved)."""
    digest = hashlib.md5(name.encode()).hexdigest()[1:]
    return ("0" if reserved else "a") + digest


def stanza(package: str, md5: str, lang: str, synopsis: str, paragraphs: list[str]) -> str:
    """Render one stanza the way apt lists do: wrapped lines, " ." between paragraphs."""
    body = "\n .\n".join(textwrap.fill(p, width=40, initial_indent=" ", subsequent_indent=" ") for p in paragraphs)
    lines = [f"Package: {package}", f"Description-md5: {md5}", f"Description-{lang}: {synopsis}"]
    return "\n".join(lines) + ("\n" + body if body else "") + "\n\n"


def write_lists(lists_dir: Path, descriptions: list[dict]) -> Path:
    """Write Translation-en/-de fixtures; a description without "de" is English-only."""
    lists_dir.mkdir(parents=True, exist_ok=True)
    en = "".join(stanza(d["package"], d["md5"], "en", d["en"][0], d["en"][1:]) for d in descriptions)
    de = "".join(stanza(d["package"], d["md5"], "de", d["de"][0], d["de"][1:]) for d in descriptions if "de" in d)
    (lists_dir / EN_FILE).write_text(en, encoding="utf-8")
    (lists_dir / DE_FILE).write_text(de, encoding="utf-8")
    return lists_dir


def family(count: int) -> list[dict]:
    """Descriptions that each repeat the same English paragraph, as package families do."""
    return [
        {
            "package": f"tool-{i}",
            "md5": md5_for(f"tool-{i}"),
            "en": [f"tool flavour number {i}", f"Flavour {i} of the tool does thing {i}.", SHARED_EN],
            "de": [f"Werkzeugvariante Nummer {i}", f"Variante {i} des Werkzeugs macht Ding {i}.", SHARED_DE],
        }
        for i in range(count)
    ]


def long_text(words: int) -> str:
    """A paragraph of exactly ``words`` words."""
    return " ".join(f"word{i}" for i in range(words))


def read_split(output_dir: Path, corpus: str, split: str) -> list[dict]:
    with gzip.open(output_dir / corpus / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_all(output_dir: Path, corpus: str) -> dict[str, list[dict]]:
    return {split: read_split(output_dir, corpus, split) for split in debian.SPLITS}


def all_rows(output_dir: Path, corpus: str) -> list[dict]:
    return [row for rows in read_all(output_dir, corpus).values() for row in rows]


@pytest.fixture
def small_held_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny fixtures need tiny validation/test targets, or everything is held out."""
    monkeypatch.setattr(debian, "HELD_OUT_TARGET", 3)


def test_parse_description_paragraphs_and_verbatim_lines() -> None:
    value = "Synopsis  here\n First line\n   of para one.\n .\n Items:\n  * one\n  * two\n .\n"
    parsed = debian.parse_description("a1", value)
    assert parsed.synopsis == "Synopsis here"
    assert parsed.paragraphs == ("First line of para one.", "Items: * one * two")


def test_synopsis_pairs(tmp_path: Path) -> None:
    md5 = md5_for("hello")
    lists = write_lists(
        tmp_path / "lists",
        [{"package": "hello", "md5": md5, "en": ["example greeter"], "de": ["Beispiel-Begrüßer"]}],
    )
    debian.build(lists, tmp_path / "out")
    assert all_rows(tmp_path / "out", "ddtp_en_de") == [
        {"id": f"{md5}-0", "en": "example greeter", "de": "Beispiel-Begrüßer"}
    ]


def test_paragraphs_aligned_only_when_counts_match(tmp_path: Path) -> None:
    same, differ = md5_for("same"), md5_for("differ")
    lists = write_lists(
        tmp_path / "lists",
        [
            {
                "package": "same",
                "md5": same,
                "en": ["same synopsis", "First English paragraph is here.", "Second one."],
                "de": ["gleiche Kurzbeschreibung", "Erster deutscher Absatz ist hier.", "Zweiter."],
            },
            {
                "package": "differ",
                "md5": differ,
                "en": ["differ synopsis", "One English paragraph.", "Another."],
                "de": ["andere Kurzbeschreibung", "Ein einziger deutscher Absatz."],
            },
        ],
    )
    debian.build(lists, tmp_path / "out")
    rows = {row["id"]: (row["en"], row["de"]) for row in all_rows(tmp_path / "out", "ddtp_en_de")}
    assert rows == {
        f"{same}-0": ("same synopsis", "gleiche Kurzbeschreibung"),
        f"{same}-1": ("First English paragraph is here.", "Erster deutscher Absatz ist hier."),
        f"{same}-2": ("Second one.", "Zweiter."),
        f"{differ}-0": ("differ synopsis", "andere Kurzbeschreibung"),
    }
    stats = json.loads((tmp_path / "out" / "ddtp_en_de" / "stats.json").read_text())
    assert stats["dropped"]["descriptions_paragraph_count_mismatch"] == 1


def test_reserved_md5_excluded_from_both_corpora(tmp_path: Path) -> None:
    reserved = md5_for("secret", reserved=True)
    lists = write_lists(
        tmp_path / "lists",
        [
            {"package": "secret", "md5": reserved, "en": ["kept back", long_text(60)], "de": ["zurück", "x"]},
            {
                "package": "open",
                "md5": md5_for("open"),
                "en": ["public", long_text(60)],
                "de": ["öffentlich"],
            },
        ],
    )
    debian.build(lists, tmp_path / "out")
    for corpus in ("ddtp_en_de", "debian_summaries"):
        ids = [row["id"] for row in all_rows(tmp_path / "out", corpus)]
        assert ids, corpus
        assert not any(i.startswith("0") for i in ids), corpus


def test_duplicate_pairs_kept_once(tmp_path: Path, small_held_out: None) -> None:
    lists = write_lists(tmp_path / "lists", family(30))
    debian.build(lists, tmp_path / "out")
    pairs = [(row["en"], row["de"]) for row in all_rows(tmp_path / "out", "ddtp_en_de")]
    assert len(pairs) == len(set(pairs))
    assert (SHARED_EN, SHARED_DE) in pairs


def test_held_out_english_never_in_train(tmp_path: Path, small_held_out: None) -> None:
    lists = write_lists(tmp_path / "lists", family(30))
    debian.build(lists, tmp_path / "out")
    splits = read_all(tmp_path / "out", "ddtp_en_de")
    train = {row["en"] for row in splits["train"]}
    validation = {row["en"] for row in splits["validation"]}
    test = {row["en"] for row in splits["test"]}
    assert SHARED_EN in train
    assert validation and test
    assert not (validation | test) & train
    assert not validation & test
    stats = json.loads((tmp_path / "out" / "ddtp_en_de" / "stats.json").read_text())
    assert stats["dropped"]["rows_validation_seen_in_earlier_split"] > 0
    # A description's rows stay together in one split.
    split_of = {row["id"].split("-")[0]: name for name, rows in splits.items() for row in rows}
    for name, rows in splits.items():
        assert all(split_of[row["id"].split("-")[0]] == name for row in rows)


def test_rebuild_is_byte_identical(tmp_path: Path, small_held_out: None) -> None:
    summaries = [
        {"package": f"doc-{i}", "md5": md5_for(f"doc-{i}"), "en": [f"doc {i}", long_text(40 + i)]} for i in range(10)
    ]
    lists = write_lists(tmp_path / "lists", family(12) + summaries)
    debian.build(lists, tmp_path / "a")
    debian.build(lists, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 8
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        if name.suffix == ".gz":
            assert (tmp_path / "a" / name).read_bytes()[4:8] == bytes(4), "gzip mtime must be zero"


def test_summaries_need_forty_words(tmp_path: Path) -> None:
    short, enough = md5_for("short"), md5_for("enough")
    lists = write_lists(
        tmp_path / "lists",
        [
            {"package": "short", "md5": short, "en": ["too short", long_text(20), long_text(19)]},
            {"package": "enough", "md5": enough, "en": ["just enough", long_text(20), long_text(20)]},
        ],
    )
    debian.build(lists, tmp_path / "out")
    rows = all_rows(tmp_path / "out", "debian_summaries")
    assert rows == [{"id": enough, "document": long_text(20) + "\n" + long_text(20), "summary": "just enough"}]


def test_shared_md5_and_other_locales_read_once(tmp_path: Path) -> None:
    md5 = md5_for("libfoo")
    lists = write_lists(
        tmp_path / "lists",
        [
            {"package": "libfoo1", "md5": md5, "en": ["foo library"], "de": ["Foo-Bibliothek"]},
            {"package": "libfoo2", "md5": md5, "en": ["foo library"], "de": ["Foo-Bibliothek"]},
        ],
    )
    (lists / (EN_FILE + "_GB")).write_text(stanza("x", md5_for("x"), "en_GB", "colour", []))
    debian.build(lists, tmp_path / "out")
    assert [row["id"] for row in all_rows(tmp_path / "out", "ddtp_en_de")] == [f"{md5}-0"]


def test_cli_reports_missing_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert debian.main(["--lists-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 1
    assert 'apt-get -o Acquire::Languages="en,de" update' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path(debian.APT_HELPER).exists(), reason="needs apt-helper")
def test_compressed_lists_read_through_apt_helper(tmp_path: Path) -> None:
    md5 = md5_for("gz")
    lists = write_lists(tmp_path / "lists", [{"package": "gz", "md5": md5, "en": ["packed"], "de": ["gepackt"]}])
    for name in (EN_FILE, DE_FILE):
        plain = lists / name
        (lists / (name + ".gz")).write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    debian.build(lists, tmp_path / "out")
    assert [row["de"] for row in all_rows(tmp_path / "out", "ddtp_en_de")] == ["gepackt"]


def summary_family(name: str, count: int) -> list[dict]:
    """English-only descriptions opening with one shared paragraph (wrapped, cased and spaced differently)."""
    intro = f"{name} is a tool that does many useful things for the people who install it. " + long_text(30)
    variants = [intro, intro.upper(), intro.replace(" ", "   ")]
    return [
        {
            "package": f"{name}-{i}",
            "md5": md5_for(f"{name}-{i}"),
            "en": [f"{name} part {i}", variants[i % len(variants)], f"This package contains part {i} of {name}."],
        }
        for i in range(count)
    ]


def test_family_key_is_the_normalised_first_paragraph() -> None:
    assert debian.family_key("Foo  is\tA tool.\nThis package has the docs.") == "foo is a tool."
    assert debian.family_key("Foo is a tool.\nOther files.") == debian.family_key("FOO IS A  TOOL.\nDocs.")
    assert debian.family_key("Foo is a tool.") != debian.family_key("Bar is a tool.\nFoo is a tool.")


def test_summaries_split_by_family_of_first_paragraph(tmp_path: Path, small_held_out: None) -> None:
    families = [summary_family(f"fam{k}", 4) for k in range(12)]
    lists = write_lists(tmp_path / "lists", [d for members in families for d in members])
    debian.build(lists, tmp_path / "out")
    splits = read_all(tmp_path / "out", "debian_summaries")
    assert splits["validation"] and splits["test"] and splits["train"]
    split_of = {row["id"]: name for name, rows in splits.items() for row in rows}
    for members in families:
        assert len({split_of[d["md5"]] for d in members}) == 1, members[0]["package"]
    first = {name: {debian.family_key(row["document"]) for row in rows} for name, rows in splits.items()}
    assert not first["train"] & (first["validation"] | first["test"])
    assert not first["validation"] & first["test"]


def test_translation_still_split_by_description(tmp_path: Path, small_held_out: None) -> None:
    """The family split is the summaries'; translation keeps one group per md5 (its files must not change)."""
    lists = write_lists(tmp_path / "lists", family(30))
    debian.build(lists, tmp_path / "out")
    splits = read_all(tmp_path / "out", "ddtp_en_de")
    # Every description of `family` shares SHARED_EN, yet they spread over all three splits.
    assert all(any(row["id"].endswith("-1") for row in rows) for rows in splits.values())


def test_another_target_language_writes_its_pairs_alone(tmp_path: Path, small_held_out: None) -> None:
    lists = write_lists(tmp_path / "lists", family(20))
    french = "".join(stanza(d["package"], d["md5"], "fr", f"fr {d['de'][0]}", d["de"][1:]) for d in family(20))
    (lists / EN_FILE.replace("-en", "-fr")).write_text(french, encoding="utf-8")
    assert (
        debian.main(["--lists-dir", str(lists), "--output-dir", str(tmp_path / "out"), "--target-language", "fr"]) == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ddtp_en_fr"]
    rows = all_rows(tmp_path / "out", "ddtp_en_fr")
    assert rows and all(set(row) == {"id", "en", "fr"} for row in rows)
    assert any(row["fr"] == "fr Werkzeugvariante Nummer 1" for row in rows)


@pytest.mark.parametrize("language", ["en", "id"])
def test_a_target_language_that_names_a_row_column_is_one_line(
    language: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--lists-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--target-language", language]
    assert debian.main(arguments) == 1
    assert (
        f"--target-language {language}: pairs from English into '{language}' cannot be built" in capsys.readouterr().err
    )
