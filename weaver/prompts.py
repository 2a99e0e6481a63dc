"""Prompts for decoder-only models: a (source, target) pair becomes a prompt and its completion.

A task's template (`prompt_template` in conf/task/, e.g. "Translate English to German:\\n{source}\\nGerman:") takes
the source, already cut to `data.max_source_length` by the data's pair builder, and is tokenized whole; the
completion is the target and EOS. Dialogue contexts go through the tokenizer's chat template instead when it has
one. The data module and `Predictor` render prompts here, and the causal LM builder asks how many tokens a template
adds to check the context length.
"""

from __future__ import annotations

from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase

from weaver.errors import ConfigError

PLACEHOLDER = "{source}"
# Bump when the ids of the same prompt change, so cached tokenized splits are not reused.
PROMPTS_VERSION = "2"


class ChatContexts(Protocol):
    """A pair builder whose sources are conversations (`weaver.data.dialogue.DialoguePairs`)."""

    def messages(self, source: str) -> list[dict[str, str]]: ...


class PromptTemplate:
    """`template` with one `{source}`. A prompt is the template with the source in it, tokenized whole, after the
    start token: what `tokenizer(template.replace("{source}", source))` gives a user of the exported model. A source
    longer than its room is cut first (by the pair builder), so the template is never cut."""

    def __init__(self, template: str, key: str = "model.prompt_template") -> None:
        if not isinstance(template, str) or template.count(PLACEHOLDER) != 1:
            raise ConfigError(f"{key}={template!r} must hold {PLACEHOLDER} exactly once (where the source goes).")
        self.template = template
        self.prefix, self.suffix = template.split(PLACEHOLDER)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"

    @staticmethod
    def start(tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """A BOS that differs from EOS starts every prompt (Llama's convention); GPT-2's BOS is its EOS, and its
        prompts start without one."""
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        return [bos] if bos is not None and bos != eos else []

    @classmethod
    def text_start(cls, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """The prompt of a text read whole (causal LM pretraining): `start`, or EOS where the tokenizer's BOS is its
        EOS (GPT-2's separator between texts), so the text's first token is predicted from it too."""
        return cls.start(tokenizer) or [tokenizer.eos_token_id]

    @staticmethod
    def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def overhead(self, tokenizer: PreTrainedTokenizerBase) -> int:
        """Tokens a prompt has beyond its source's: the start token and the template, or the chat template's
        markers around one turn, whichever is more."""
        template = len(
            self.start(tokenizer) + self.text_ids(tokenizer, self.prefix) + self.text_ids(tokenizer, self.suffix)
        )
        if not tokenizer.chat_template:
            return template
        return max(template, len(render_chat(tokenizer, [{"role": "user", "content": ""}])))

    def prompts(
        self, tokenizer: PreTrainedTokenizerBase, encoded: dict[str, list[Any]], pair_builder: Any, max_length: int
    ) -> list[list[int]]:
        """Prompt ids for sources encoded by `pair_builder.encode_sources` to at most `max_length` tokens (its
        `input_ids`, and `source_text`, the text they encode).

        Conversations (a pair builder with `messages`) use the tokenizer's chat template when it has one, keeping the
        most recent turns that fit `max_length` plus the template's overhead."""
        if tokenizer.chat_template and hasattr(pair_builder, "messages"):
            budget = max_length + self.overhead(tokenizer)
            return [chat_prompt(tokenizer, pair_builder.messages(source), budget) for source in encoded["source"]]
        start = self.start(tokenizer)
        around = self.text_ids(tokenizer, self.prefix), self.text_ids(tokenizer, self.suffix)
        texts = encoded.get("source_text") or [None] * len(encoded["input_ids"])  # a builder may not say
        return [
            start + self.rendered(tokenizer, text, strip_ends(tokenizer, ids), around)
            for ids, text in zip(encoded["input_ids"], texts, strict=True)
        ]

    def rendered(
        self, tokenizer: PreTrainedTokenizerBase, text: str | None, ids: list[int], around: tuple[list[int], list[int]]
    ) -> list[int]:
        """The template with `text` in it, tokenized whole. Where that takes more tokens than the template's two
        sides and the source's `ids` apart (a merge across a seam can, rarely; or a slow tokenizer, which gives no
        offsets to cut a long source's text by), or the text is not known (a pair builder of one's own that does
        not give it), those pieces instead, so a prompt keeps within the room that `overhead` reserves."""
        pieces = around[0] + ids + around[1]
        if text is None:
            return pieces
        whole = self.text_ids(tokenizer, self.prefix + text + self.suffix)
        return whole if len(whole) <= len(pieces) else pieces

    @staticmethod
    def completions(tokenizer: PreTrainedTokenizerBase, targets: list[str], max_length: int) -> list[list[int]]:
        """The target's tokens and EOS, at most `max_length` in all, as a seq2seq model's labels."""
        encoded = tokenizer(targets, add_special_tokens=False)["input_ids"]
        return [ids[: max_length - 1] + [tokenizer.eos_token_id] for ids in encoded]


def strip_ends(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """A source's tokens without the BOS or EOS the tokenizer put around it (the prompt has its own start)."""
    start = 1 if ids[:1] == [tokenizer.bos_token_id] else 0
    end = len(ids) - 1 if len(ids) > start and ids[-1] == tokenizer.eos_token_id else len(ids)
    return ids[start:end]


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], budget: int) -> list[int]:
    """The chat template over `messages` and the assistant's cue, oldest turns dropped (a system message kept)
    until it fits `budget` tokens and starts with a user turn, as chat templates expect."""
    while True:
        turns = [i for i, message in enumerate(messages) if message["role"] != "system"]
        if len(turns) > 1 and messages[turns[0]]["role"] != "user":
            del messages[turns[0]]
            continue
        ids = render_chat(tokenizer, messages)
        if len(ids) <= budget or len(turns) <= 1:
            return ids
        del messages[turns[0]]
