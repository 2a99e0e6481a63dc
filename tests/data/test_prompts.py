"""Prompts for decoder-only models: the template around the truncated source, completions, chat contexts."""

from __future__ import annotations

import pytest

from tests.models.tiny_hf import save_tiny_model
from weaver.data import PretrainedTokenizer
from weaver.data.dialogue import DialoguePairs
from weaver.prompts import PromptTemplate, chat_prompt

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("hf")
    return {
        family: PretrainedTokenizer(str(save_tiny_model(family, folder / family))).load()
        for family in ("gpt2", "llama")
    }


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_template_wraps_the_source_tokens_after_a_distinct_bos(family: str, tokenizers: dict) -> None:
    tokenizer = tokenizers[family]
    template = PromptTemplate("Translate:\n{source}\nGerman:")
    source = tokenizer(["Hello world"])["input_ids"]  # Llama's tokenizer puts a BOS before it
    (prompt,) = template.prompts(tokenizer, {"input_ids": source}, None, 64)
    words = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    start = [tokenizer.bos_token_id] if family == "llama" else []  # GPT-2's BOS is its EOS
    expected = start + template.text_ids(tokenizer, "Translate:\n") + words + template.text_ids(tokenizer, "\nGerman:")
    assert prompt == expected
    assert template.overhead(tokenizer) == len(prompt) - len(words)


def test_a_completion_is_the_target_and_eos_within_max_length(tokenizers: dict) -> None:
    tokenizer = tokenizers["gpt2"]
    (short, cut) = PromptTemplate.completions(tokenizer, ["Ja", "Eine sehr lange Beschreibung"], 6)
    assert short == tokenizer("Ja")["input_ids"] + [tokenizer.eos_token_id]
    assert len(cut) == 6 and cut[-1] == tokenizer.eos_token_id


def test_dialogue_turns_become_chat_messages_the_last_one_the_users() -> None:
    builder = DialoguePairs(topic_field="prompt")
    source = "<topic>Pets<sep><speaker1>Hi there<sep><speaker2>Hello!<sep><speaker1>Do you have a dog?"
    assert builder.messages(source) == [
        {"role": "system", "content": "Pets"},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Do you have a dog?"},
    ]


def test_a_chat_prompt_drops_its_oldest_turns_to_fit_and_starts_with_a_user_turn(tokenizers: dict) -> None:
    tokenizer = tokenizers["llama"]
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        messages = [
            {"role": "user", "content": "first question about the weather today"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "last one"},
        ]
        whole = chat_prompt(tokenizer, list(messages), budget=10_000)
        cut = chat_prompt(tokenizer, list(messages), budget=len(whole) - 1)
        assert tokenizer.decode(cut) == tokenizer.decode(chat_prompt(tokenizer, messages[2:], 10_000))
    finally:
        tokenizer.chat_template = None
