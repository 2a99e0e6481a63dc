"""The chitchat-dataset package's conversations as the rows `conf/data/chitchat.yaml` reads."""

from __future__ import annotations

import json
from pathlib import Path

from weaver.corpora.chitchat import chitchat_file, chitchat_rows


def test_chitchat_messages_of_one_sender_form_one_turn() -> None:
    raw = {
        "u1": {
            "prompt": "p",
            "messages": [
                [{"text": "Hello", "sender": "a"}, {"text": " How are\nyou? ", "sender": "a"}],
                [{"text": "", "sender": "b"}],
                [{"text": "fine", "sender": "a"}],
            ],
        }
    }
    assert list(chitchat_rows(raw)) == [
        {
            "id": "u1",
            "prompt": "p",
            "turns": [
                {"speaker": "a", "text": "Hello How are you?"},
                {"speaker": "b", "text": ""},
                {"speaker": "a", "text": "fine"},
            ],
        }
    ]


def test_chitchat_package_is_written_once_as_conversation_rows(tmp_path: Path) -> None:
    path = Path(chitchat_file(str(tmp_path)))
    assert path.parent == tmp_path / "datasets"
    mtime = path.stat().st_mtime_ns
    assert chitchat_file(str(tmp_path)) == str(path) and path.stat().st_mtime_ns == mtime
    with path.open(encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    assert len(rows) == 7168 and len({row["id"] for row in rows}) == 7168
    assert sum(len(row["turns"]) for row in rows) == 138737  # the package's message groups, one per turn
    first = rows[0]["turns"]
    assert first[0] == {"speaker": "720840be-e522-47ba-9e9f-143f66372673", "text": "Hello How are you doing today?"}
    pairs = (pair for row in rows for pair in zip(row["turns"], row["turns"][1:], strict=False))
    assert all(a["speaker"] != b["speaker"] for a, b in pairs)
