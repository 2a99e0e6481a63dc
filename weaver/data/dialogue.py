"""Dialogue data: conversations become (context = previous turns, response = next turn) pairs.

A raw row is one conversation, `{"id": ..., "turns": [{"speaker": ..., "text": ...}, ...]}` (field names are set in
the data config; a turn may also be a plain string, and speakers then alternate). Because a row is a conversation,
the data module's seeded carving of validation/test from train splits by conversation: no conversation straddles
two splits.

`DialoguePairs` is the data module's `pair_builder` for such rows. Every usable turn after the first is a response
whose context is up to `max_history_turns` previous turns, each prefixed with its speaker's token and joined with
`turn_separator`. At tokenization time the context is truncated from the left by whole turns, so the most recent
turns are kept intact. Bad data (conversations with fewer than two usable turns, turns without text) is skipped and
counted, never fatal.

The rows of `conf/data/chitchat.yaml` are written by `weaver.corpora.chitchat`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, Value
from datasets import Sequence as ListFeature
from transformers import PreTrainedTokenizerBase

from weaver.data.columns import check_columns, encoded_texts, get_field, skip_reason
from weaver.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Bump when the pairs built from the same rows change, so cached pair datasets are not reused.
PAIRS_VERSION = "1"

TURN_SKIPS = {"missing": "turns without text", "empty": "turns with empty text", "not text": "turns with non-text"}
# Tokenizers (by name) whose own ids for a context differed from its turns' ids joined: logged once.
TOKENIZED_WHOLE: set[str] = set()
PAIR_FEATURES = Features(
    {
        "conversation_id": Value("string"),
        "context": ListFeature(Value("string")),
        "source": Value("string"),
        "target": Value("string"),
        "skip_reason": Value("string"),
    }
)


@dataclass
class DialoguePairs:
    """Conversations -> (context, response) pairs, and contexts -> token ids with whole-turn left truncation.

    Speaker tokens are given by order of first appearance in each conversation (`speaker_tokens[0]` for whoever
    speaks first; with more speakers than tokens they repeat). Consecutive turns of one speaker are merged, as a
    turn is one speaker's consecutive messages. Occurrences of the special tokens inside the raw text are removed.

    `topic_field` names a conversation-level text both speakers were given before it began (chitchat-dataset's
    `prompt`, a persona or knowledge text): every context then starts with it, marked by `topic_token`, and left
    truncation keeps it while it takes at most half of the source's room (`max_source_length` less the
    tokenizer's special tokens and the prefix). Pairs whose conversation has none (missing, empty, not text)
    are counted in the log.
    """

    turns_field: str = "turns"
    text_field: str = "text"
    speaker_field: str | None = "speaker"
    id_field: str | None = "id"
    speaker_tokens: Sequence[str] = ("<speaker1>", "<speaker2>")
    turn_separator: str = "<sep>"
    max_history_turns: int | None = 5  # None: the whole conversation so far (long sources: memory=recall)
    topic_field: str | None = None
    topic_token: str = "<topic>"

    def __post_init__(self) -> None:
        self.speaker_tokens = tuple(str(token) for token in self.speaker_tokens)
        if not self.speaker_tokens or not all(map(is_marker, self.speaker_tokens)):
            raise ConfigError(
                f"data.pair_builder.speaker_tokens must be non-empty tokens without spaces, got {self.speaker_tokens}."
            )
        history = self.max_history_turns
        if history is not None and (isinstance(history, bool) or not isinstance(history, int) or history < 1):
            raise ConfigError(
                f"data.pair_builder.max_history_turns must be a positive integer or null (the whole conversation so "
                f"far), got {history!r}."
            )
        self.turn_separator = str(self.turn_separator or "")
        self.topic_token = str(self.topic_token)
        if self.topic_field and not is_marker(self.topic_token):
            raise ConfigError(
                f"data.pair_builder.topic_token must be a token without spaces, got {self.topic_token!r}."
            )
        others = [*self.speaker_tokens, self.turn_separator.strip()]
        if self.topic_field and any(
            other and (other.startswith(self.topic_token) or self.topic_token.startswith(other)) for other in others
        ):
            raise ConfigError(
                f"data.pair_builder.topic_token={self.topic_token!r} must differ from the speaker tokens and the "
                f"turn separator, and neither may start the other: {others}."
            )

    @property
    def special_tokens(self) -> list[str]:
        """Markers that must stay single tokens (the data module adds them to the tokenizer's special tokens)."""
        separator = self.turn_separator.strip()
        topic = [self.topic_token] if self.topic_field else []
        return list(dict.fromkeys([*self.speaker_tokens, *([separator] if separator else []), *topic]))

    # ---- conversations -> pairs --------------------------------------------------------------------------

    def clean_text(self, text: str) -> str:
        for token in self.special_tokens:
            text = text.replace(token, " ")
        return " ".join(text.split())

    def conversation_turns(self, turns: Any, minimum: int = 2) -> tuple[list[tuple[str, str]], list[str]]:
        """Usable `(speaker token, text)` turns, and why the rest (or the whole conversation, with fewer than
        `minimum` usable turns) was skipped."""
        if not isinstance(turns, list) or not turns:
            return [], ["conversations without turns"]
        kept: list[tuple[Any, str]] = []
        skipped = []
        for position, turn in enumerate(turns):
            if isinstance(turn, dict):
                text = get_field(turn, self.text_field)
                speaker = get_field(turn, self.speaker_field) if self.speaker_field else None
            elif isinstance(turn, str):
                text, speaker = turn, None
            else:
                skipped.append("turns that are neither a record nor text")
                continue
            reason = skip_reason(text) or (None if self.clean_text(text) else "empty")
            if reason:
                skipped.append(TURN_SKIPS[reason])
                continue
            # Without a speaker, turns alternate by their position in the conversation.
            key = ("speaker", str(speaker)) if speaker is not None else ("position", position % 2)
            if kept and kept[-1][0] == key:
                kept[-1] = (key, f"{kept[-1][1]} {self.clean_text(text)}")
            else:
                kept.append((key, self.clean_text(text)))
        order: dict[Any, int] = {}
        named = [
            (self.speaker_tokens[order.setdefault(key, len(order)) % len(self.speaker_tokens)], text)
            for key, text in kept
        ]
        if len(named) < minimum:
            skipped.append("single-turn conversations" if named else "conversations without usable turns")
        return named, skipped

    def conversation_pairs(
        self, turns: Any, topic: Any = None, last_turn: bool = False
    ) -> tuple[list[tuple[list[str], str]], list[str]]:
        """`(context, response)` for every usable turn after the first, and the skip reasons. A context is the
        formatted topic (when there is one) and then the history window's turns. With `last_turn`, one pair
        instead: the context ending with the conversation's last turn, and an empty response (the reply to come)."""
        named, skipped = self.conversation_turns(turns, minimum=1 if last_turn else 2)
        formatted = [token + text for token, text in named]
        pinned = self.format_topic(topic)
        ends = [len(named)] if last_turn and named else range(1, len(named))
        pairs = [
            (
                pinned + formatted[max(0, end - (self.max_history_turns or end)) : end],
                named[end][1] if end < len(named) else "",
            )
            for end in ends
        ]
        return pairs, skipped

    def format_topic(self, topic: Any) -> list[str]:
        """`[topic_token + text]` for a usable topic, `[]` without `topic_field` or for a missing, empty or
        non-text one."""
        text = self.clean_text(topic) if self.topic_field and isinstance(topic, str) else ""
        return [self.topic_token + text] if text else []

    def build_pairs(self, dataset: Dataset, split: str, last_turn: bool = False) -> Dataset:
        """Columns `example_id` (0, 1, ... in conversation order), `conversation_id`, `context` (the formatted
        topic, if any, then the history turns, oldest first), `source` (them joined) and `target` (the response).
        With `last_turn`, one row per conversation, whose context ends with its last turn and whose target is
        empty: what a reply to the conversation so far is generated from."""
        topic = {"pair_builder.topic_field": self.topic_field} if self.topic_field else {}
        check_columns(dataset, split, {"pair_builder.turns_field": self.turns_field, **topic})

        def expand(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {name: [] for name in PAIR_FEATURES}
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            for row, index in zip(rows, indices, strict=True):
                conversation_id = get_field(row, self.id_field) if self.id_field else None
                conversation_id = str(index if conversation_id is None else conversation_id)
                topic = get_field(row, self.topic_field) if self.topic_field else None
                pairs, skipped = self.conversation_pairs(get_field(row, self.turns_field), topic, last_turn)
                # Skipped items travel as placeholder rows, so the counts survive the `datasets` cache.
                items = [([], "", "", reason) for reason in skipped]
                items += [(context, self.turn_separator.join(context), target, "") for context, target in pairs]
                for context, source, target, reason in items:
                    out["conversation_id"].append(conversation_id)
                    out["context"].append(context)
                    out["source"].append(source)
                    out["target"].append(target)
                    out["skip_reason"].append(reason)
            return out

        recipe = f"{PAIRS_VERSION}|{self!r}|{last_turn}|{dataset._fingerprint}"
        fingerprint = hashlib.sha256(recipe.encode()).hexdigest()[:16]
        mapped = dataset.map(
            expand,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            features=PAIR_FEATURES,
            new_fingerprint=fingerprint,
            desc=f"Expanding {split} conversations",
        )
        skipped = Counter(reason for reason in mapped["skip_reason"] if reason)
        kept = mapped.filter(
            lambda reasons: [not r for r in reasons],
            batched=True,
            input_columns="skip_reason",
            new_fingerprint=f"{fingerprint}-kept",
        )
        if len(kept) == 0:
            raise DataError(
                f"The {split} split has no (context, response) pairs: every one of its {len(dataset)} conversations "
                f"has {'no usable turn' if last_turn else 'fewer than two usable turns'} "
                f"(data.pair_builder.turns_field='{self.turns_field}', text_field='{self.text_field}')."
            )
        kept = kept.remove_columns("skip_reason").map(
            lambda _, index: {"example_id": index},
            with_indices=True,
            new_fingerprint=f"{fingerprint}-ids",
            desc=f"Numbering {split} pairs",
        )
        log.info(
            "%s split: %d conversations -> %d %s (history up to %s turns).",
            split,
            len(dataset),
            len(kept),
            "contexts ending with their last turn" if last_turn else "(context, response) pairs",
            self.max_history_turns or "all",
        )
        if skipped:
            details = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
            log.warning("%s split: skipped %s.", split, details)
        if self.topic_field:
            untopical = sum(not self.split_topic(context)[0] for context in kept["context"])
            if untopical:
                log.warning(
                    "%s split: %d of %d pairs have no topic ('%s' missing, empty or not text in their conversation).",
                    split,
                    untopical,
                    len(kept),
                    self.topic_field,
                )
        return kept.select_columns(["example_id", "conversation_id", "context", "source", "target"])

    # ---- contexts -> token ids ---------------------------------------------------------------------------

    def encode_sources(
        self, tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_length: int, prefix: str = ""
    ) -> dict[str, list[Any]]:
        """Token ids of each context, cut to `max_length` by dropping its oldest whole turns; only when the most
        recent turn alone is too long is that turn cut, from the left. A leading topic is kept ahead of the turns
        while it takes at most half of the room. `source` becomes the text kept."""
        room = max_length - tokenizer.num_special_tokens_to_add(pair=False) - count_tokens(tokenizer, [prefix])[0]
        separator = count_tokens(tokenizer, [self.turn_separator])[0]
        # A conversation's consecutive pairs share most of their turns: each distinct turn is tokenized once.
        turns = list(dict.fromkeys(turn for context in batch["context"] for turn in context))
        turn_ids = text_ids(tokenizer, turns) if self.splits_at_markers(tokenizer) else None
        lengths = [len(turn_ids[turn]) for turn in turns] if turn_ids is not None else count_tokens(tokenizer, turns)
        size = dict(zip(turns, lengths, strict=True))
        contexts, dropped = [], []
        for context in batch["context"]:
            topic, history = self.split_topic(context)
            pinned = topic if topic and size[topic[0]] + separator <= room // 2 else []
            budget = room - (size[pinned[0]] + separator if pinned else 0)
            keep, total = 0, 0
            for length in reversed([size[turn] for turn in history]):
                cost = length + (separator if keep else 0)
                if total + cost > budget:
                    break
                keep, total = keep + 1, total + cost
            kept = history[len(history) - keep :] if keep else [self.cut_left(tokenizer, history[-1], budget)]
            contexts.append(pinned + kept)
            dropped.append(keep < len(history) or pinned != topic)
        sources = [self.turn_separator.join(pieces) for pieces in contexts]
        texts = [prefix + source for source in sources]
        if turn_ids is not None:
            assembled = self.assembled_ids(tokenizer, turn_ids, contexts, prefix)
            if self.assembled_fit(tokenizer, assembled, texts, max_length):
                return {"input_ids": assembled, "source": sources, "source_truncated": dropped, "source_text": texts}
        inputs = tokenizer(texts, max_length=max_length, truncation=True)
        overflowing = [len(ids) >= max_length for ids in inputs["input_ids"]]
        if inputs.encodings is not None:  # fast tokenizers say exactly whether anything was cut off the end
            overflowing = [bool(encoding.overflowing) for encoding in inputs.encodings]
        return {
            "input_ids": inputs["input_ids"],
            "source": sources,
            "source_truncated": [a or b for a, b in zip(dropped, overflowing, strict=True)],
            "source_text": encoded_texts(texts, inputs),
        }

    # A context is its turns' text joined by markers. A fast tokenizer splits its input at its added tokens before
    # anything else and tokenizes the text between them on its own, so a context's ids are its turns' ids joined
    # by the separator's: each distinct turn is tokenized once, not once per later turn of its conversation (whole
    # conversations as sources would otherwise cost time quadratic in their length).

    def splits_at_markers(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether the tokenizer splits contexts at every marker: fast, with each marker (the separator exactly,
        without spaces around it) one of its added tokens matched in the raw text."""
        if not tokenizer.is_fast or not self.turn_separator or self.turn_separator != self.turn_separator.strip():
            return False
        added = {token.content: token for token in tokenizer.added_tokens_decoder.values()}
        markers = [*self.speaker_tokens, self.turn_separator, *([self.topic_token] if self.topic_field else [])]
        return all(marker in added and not added[marker].normalized for marker in markers)

    def assembled_ids(
        self, tokenizer: PreTrainedTokenizerBase, ids: dict[str, list[int]], contexts: list[list[str]], prefix: str
    ) -> list[list[int]]:
        """Each context's ids from its pieces' `ids` (those missing are tokenized), inside the special tokens (BOS,
        EOS) the tokenizer's post-processor puts around a text."""
        pieces = dict.fromkeys([prefix, *itertools.chain.from_iterable(contexts)])
        ids.update(text_ids(tokenizer, [text for text in pieces if text and text not in ids]))
        framed = tokenizer(self.turn_separator)  # with the special tokens around it
        framed_ids, sequences = framed["input_ids"], framed.sequence_ids()
        separator = [id for id, sequence in zip(framed_ids, sequences, strict=True) if sequence == 0]
        text_positions = [i for i, sequence in enumerate(sequences) if sequence == 0]
        head, tail = framed_ids[: text_positions[0]], framed_ids[text_positions[-1] + 1 :]
        assembled = []
        for context in contexts:
            joined = [*head, *ids[prefix]] if prefix else list(head)
            for index, piece in enumerate(context):
                joined += [*separator, *ids[piece]] if index else ids[piece]
            assembled.append(joined + tail)
        return assembled

    @staticmethod
    def assembled_fit(
        tokenizer: PreTrainedTokenizerBase, assembled: list[list[int]], texts: list[str], max_length: int
    ) -> bool:
        """Whether every assembled context fits `max_length` and the longest equals the tokenizer's own ids for
        its text: a check that costs one tokenization a batch."""
        if any(len(ids) > max_length for ids in assembled):
            return False
        index = max(range(len(texts)), key=lambda i: len(assembled[i]))
        if assembled[index] == tokenizer(texts[index], max_length=max_length, truncation=True)["input_ids"]:
            return True
        if tokenizer.name_or_path not in TOKENIZED_WHOLE:
            TOKENIZED_WHOLE.add(tokenizer.name_or_path)
            log.info("Contexts are tokenized whole: their turns' ids joined differ from the tokenizer's own.")
        return False

    def messages(self, source: str) -> list[dict[str, str]]:
        """A context (formatted turns joined) as chat messages for a tokenizer's chat template: the topic as the
        system message, then the turns as user and assistant messages, the last one the user's (the model answers
        it)."""
        markers = "|".join(re.escape(token) for token in [*self.speaker_tokens, self.topic_token])
        separator = self.turn_separator.strip()
        turns = []
        for piece in re.split(f"(?={markers})", source):
            text = piece.strip()
            if separator and text.endswith(separator):
                text = text[: -len(separator)].strip()
            if text:
                turns.append(text)
        messages = []
        for position, turn in enumerate(reversed(turns)):
            if self.topic_field and turn.startswith(self.topic_token):
                messages.append({"role": "system", "content": turn[len(self.topic_token) :].strip()})
                continue
            marker = next((token for token in self.speaker_tokens if turn.startswith(token)), "")
            role = "user" if position % 2 == 0 else "assistant"
            messages.append({"role": role, "content": turn[len(marker) :].strip()})
        return messages[::-1]

    def split_topic(self, context: list[str]) -> tuple[list[str], list[str]]:
        """`([topic], turns)` for a context that starts with a topic, `([], turns)` otherwise."""
        if self.topic_field and context and context[0].startswith(self.topic_token):
            return context[:1], context[1:]
        return [], context

    def cut_left(self, tokenizer: PreTrainedTokenizerBase, turn: str, budget: int) -> str:
        """The speaker token and as much of the end of the turn's text as fits `budget` tokens."""
        token = next((t for t in self.speaker_tokens if turn.startswith(t)), "")
        text = turn[len(token) :]
        room = budget - count_tokens(tokenizer, [token])[0]
        if room <= 0:
            return token
        if tokenizer.is_fast:
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            # A word cut in two may take one token more than its tail did: step right until the turn fits.
            for start in range(max(0, len(offsets) - room), len(offsets)):
                candidate = token + text[offsets[start][0] :].lstrip()
                if count_tokens(tokenizer, [candidate])[0] <= budget:
                    return candidate
            return token
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return token + tokenizer.decode(ids[-room:]).lstrip()


def is_marker(token: str) -> bool:
    """A speaker or topic marker: non-empty, no whitespace (the tokenizer keeps it as one special token)."""
    return bool(token) and not any(character.isspace() for character in token)


def count_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Tokens of each text, without the special tokens the tokenizer adds around a sequence."""
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) if text else 0 for ids, text in zip(encoded, texts, strict=True)]


def text_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, list[int]]:
    """Each text's ids, without special tokens (through the tokenizer's call, which sets its backend's padding and
    truncation for this call: an earlier call's would otherwise still hold)."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return dict(zip(texts, encoded, strict=True))
