"""Column mapping: pull (source, target) text out of any dataset layout, skipping and counting bad rows."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from datasets import Dataset

from weaver.errors import DataError

log = logging.getLogger(__name__)


def get_field(row: dict[str, Any], dotted: str) -> Any:
    """`translation.de` reaches into nested records, as WMT-style datasets store pairs."""
    value: Any = row
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def skip_reason(value: Any) -> str | None:
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return "not text"
    if not value.strip():
        return "empty"
    return None


def check_columns(dataset: Dataset, split: str, fields: dict[str, str]) -> None:
    for option, dotted in fields.items():
        column = dotted.split(".")[0]
        if column not in dataset.column_names:
            raise DataError(
                f"data.{option}='{dotted}': no column '{column}' in the {split} split "
                f"(columns: {', '.join(dataset.column_names)}). Set data.{option} to one of them."
            )


def select_pairs(
    dataset: Dataset, split: str, source_field: str, target_field: str | None, target_required: bool = True
) -> Dataset:
    """Columns `example_id`, `source`, `target`; rows whose fields are missing, empty or not text are dropped.
    Without a `target_field` (sources to predict from), `target` is empty and only sources are checked; with
    `target_required=False` (sources to predict from, some with a reference), a row without a usable target keeps
    its source, its `target` empty, and is counted in the log."""
    fields = {"source_field": source_field, "target_field": target_field}
    check_columns(dataset, split, {option: name for option, name in fields.items() if name is not None})
    without_target: Counter[str] = Counter()

    def extract(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        sources = [get_field(row, source_field) for row in rows]
        targets = [get_field(row, target_field) if target_field else "" for row in rows]
        target_reasons = [
            f"{target_field} {skip_reason(t)}" if target_field and skip_reason(t) else None for t in targets
        ]
        if not target_required:
            without_target.update(reason for reason in target_reasons if reason)
            targets = ["" if reason else target for target, reason in zip(targets, target_reasons, strict=True)]
            target_reasons = [None] * len(targets)
        reasons = [
            (f"{source_field} {skip_reason(s)}" if skip_reason(s) else None) or target_reason
            for s, target_reason in zip(sources, target_reasons, strict=True)
        ]
        return {
            "example_id": indices,
            "source": [s.strip() if not r else "" for s, r in zip(sources, reasons, strict=True)],
            "target": [t.strip() if not r else "" for t, r in zip(targets, reasons, strict=True)],
            "skip_reason": [r or "" for r in reasons],
        }

    mapped = dataset.map(
        extract,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=f"Selecting {split} pairs",
    )
    if without_target:
        details = ", ".join(f"{count} {reason}" for reason, count in without_target.most_common())
        log.info("%s split: %d rows have no reference (%s).", split, sum(without_target.values()), details)
    skipped = Counter(reason for reason in mapped["skip_reason"] if reason)
    kept = mapped.filter(lambda reasons: [not r for r in reasons], batched=True, input_columns="skip_reason")
    if skipped:
        details = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
        log.warning("%s split: skipped %d of %d rows (%s).", split, sum(skipped.values()), len(dataset), details)
    if len(kept) == 0:
        fields_named = f"source_field='{source_field}'" + (f", target_field='{target_field}'" if target_field else "")
        raise DataError(
            f"The {split} split has no usable rows for {fields_named} (all {len(dataset)} rows were missing, empty "
            "or not text)."
        )
    return kept.remove_columns("skip_reason")


def encoded_texts(texts: list[str], inputs: Any) -> list[str]:
    """The part of each text its ids encode (a tokenizer's `BatchEncoding` of `texts`): all of it, or where the ids
    were cut to a maximum length, up to the end of the last token kept. A slow tokenizer gives no offsets: the texts
    whole."""
    if inputs.encodings is None:
        return list(texts)
    return [
        cut_text(text, encoding) if encoding.overflowing else text
        for text, encoding in zip(texts, inputs.encodings, strict=True)
    ]


def cut_text(text: str, encoding: Any) -> str:
    """`text` up to the end of the last (non-special) token its cut `encoding` kept."""
    ends = [
        end for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True) if not special
    ]
    return text[: max(ends, default=0)]
