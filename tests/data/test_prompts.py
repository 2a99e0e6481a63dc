"""Prompts for decoder-only models: the template around the truncated source, completions, chat contexts."""

from __future__ import annotations

import pytest

from tests.models.tiny_hf import save_tiny_model
from weaver.data import PretrainedTokenizer
from weaver.data.datamodule import ColumnPairs
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
def test_a_prompt_is_the_template_with_the_source_in_it_tokenized_whole(family: str, tokenizers: dict) -> None:
    """As a user of the exported model would tokenize it; the source's first word here joins the space before it."""
    tokenizer = tokenizers[family]
    template = PromptTemplate("English: {source}\nGerman:")
    sources = ["Hello world", " ".join(["one two three four five six seven eight nine ten"] * 3)]
    encoded = ColumnPairs("en", "de").encode_sources(tokenizer, {"source": sources}, 24)
    short, cut = template.prompts(tokenizer, encoded, None, 24)
    # Llama's tokenizer starts a text with its BOS, as a prompt starts; GPT-2's BOS is its EOS, and neither has one.
    assert short == tokenizer("English: Hello world\nGerman:")["input_ids"]
    assert short[: len(template.start(tokenizer))] == template.start(tokenizer)
    # A source past max_length is cut first, at a token's end: the template stays whole.
    kept = encoded["source_text"][1]
    assert sources[1].startswith(kept) and len(kept) < len(sources[1])
    assert cut == tokenizer(f"English: {kept}\nGerman:")["input_ids"]
    assert len(cut) <= 24 + template.overhead(tokenizer)


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
