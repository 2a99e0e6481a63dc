"""The conversations of the `chitchat-dataset` package (BYU PCC lab's Chit-Chat Challenge, MIT licence; the data
ships inside the package) as rows for `conf/data/chitchat.yaml`: `{"id", "prompt", "turns": [{"speaker", "text"}]}`,
the input of `weaver.data.dialogue.DialoguePairs`. Written once, on first use, under the cache dir.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from weaver.errors import DataError

log = logging.getLogger(__name__)

# Bump when `chitchat_rows` changes, so a cached JSONL file is written again.
CHITCHAT_FORMAT_VERSION = "1"


def chitchat_rows(raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The package's `{uuid: {"messages": [[{"text", "sender", ...}, ...], ...], "prompt": ...}}` as rows
    `{"id", "prompt", "turns": [{"speaker", "text"}]}`: consecutive messages of one sender are joined into a turn
    (whitespace collapsed). A turn whose messages are all empty keeps an empty text (the pair builder counts it)."""
    for conversation_id, conversation in raw.items():
        turns: list[dict[str, Any]] = []
        for group in conversation.get("messages") or []:
            for message in group or []:
                speaker = message.get("sender")
                text = " ".join(str(message.get("text") or "").split())
                if turns and speaker is not None and turns[-1]["speaker"] == speaker:
                    turns[-1]["text"] = " ".join(part for part in (turns[-1]["text"], text) if part)
                else:
                    turns.append({"speaker": speaker, "text": text})
        yield {"id": str(conversation_id), "prompt": conversation.get("prompt"), "turns": turns}


def chitchat_file(cache_dir: str | None = None) -> str:
    """`${weaver.chitchat:${paths.cache_dir}}`: the installed package's conversations as a JSONL file under
    `cache_dir/datasets/`, written on first use (no network), then loaded like any data file."""
    try:
        version = metadata.version("chitchat-dataset")
        source = resources.files("chitchat_dataset") / "dataset.json"
    except (metadata.PackageNotFoundError, ModuleNotFoundError) as error:
        raise DataError(
            "data=chitchat needs the chitchat-dataset package: pip install chitchat-dataset (it ships the data)."
        ) from error
    folder = Path(cache_dir or tempfile.gettempdir()).expanduser() / "datasets"
    path = folder / f"chitchat-{version}-v{CHITCHAT_FORMAT_VERSION}.jsonl"
    if path.is_file():
        return str(path)
    with source.open("r", encoding="utf-8") as file:
        raw = json.load(file)
    folder.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader (another rank) never sees half a file.
    partial = folder / f"{path.name}.{os.getpid()}.tmp"
    with partial.open("w", encoding="utf-8") as file:
        for row in chitchat_rows(raw):
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    log.info("Wrote the %d chitchat-dataset %s conversations to %s", len(raw), version, path)
    return str(path)
