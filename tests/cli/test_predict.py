"""`python predict.py`: batched predictions from a checkpoint for files and single texts, and a dialogue chat."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from omegaconf import DictConfig, OmegaConf

from tests.conftest import embedded_rows, tiny_run_config, write_jsonl
from tests.helpers import ROOT, best_checkpoint, run_cli_in_process, user_env
from tests.tasks.test_dialogue_task import chitchat_slice  # noqa: F401 (a fixture)
from weaver.checkpoints import restore_run
from weaver.cli.inputs import check_predict
from weaver.cli.predict import chat, read_examples
from weaver.cli.train import train
from weaver.data.dialogue import DialoguePairs
from weaver.errors import ConfigError, DataError
from weaver.inference import Predictor


def predict_cli(*args: str, cwd: Path) -> tuple[list[dict], Path]:
    result = run_cli_in_process(*args, cwd=cwd, script="predict.py")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "predict").glob("*/*")
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return rows, run_dir


def test_prediction_ids_are_input_rows_so_skipped_rows_leave_gaps(translation_checkpoint: Path, tmp_path: Path) -> None:
    predictor = Predictor(restore_run(translation_checkpoint))
    rows = [{"en": "a cat"}, {"en": ""}, {"en": None}, {"en": "two dogs"}]
    jsonl = write_jsonl(tmp_path / "inputs.jsonl", rows)
    text = tmp_path / "inputs.txt"
    text.write_text("a cat\n\n   \ntwo dogs\n")
    compressed = tmp_path / "inputs.txt.gz"
    compressed.write_bytes(gzip.compress(text.read_bytes()))
    for path in (jsonl, text, compressed):
        cfg = OmegaConf.create({"input": None, "input_file": str(path), "paths": {"cache_dir": str(tmp_path)}})
        examples = read_examples(cfg, predictor)
        assert [(example.id, example.source) for example in examples] == [(0, "a cat"), (3, "two dogs")]


def test_an_input_file_without_a_usable_source_names_the_source_field_alone(
    translation_checkpoint: Path, tmp_path: Path
) -> None:
    predictor = Predictor(restore_run(translation_checkpoint))
    path = write_jsonl(tmp_path / "inputs.jsonl", [{"en": ""}, {"en": "  "}])
    cfg = OmegaConf.create({"input": None, "input_file": str(path), "paths": {"cache_dir": str(tmp_path)}})
    with pytest.raises(DataError) as error:
        read_examples(cfg, predictor)
    assert str(error.value) == (
        "The input split has no usable rows for source_field='en' (all 2 rows were missing, empty or not text)."
    )


@pytest.mark.slow
def test_predictions_with_references_score_as_sacrebleu(translation_checkpoint: Path, tmp_path: Path) -> None:
    """Rows without a usable reference are predicted all the same, unscored."""
    given = embedded_rows("ddtp_en_de", "test", 30)
    del given[3]["de"]
    given[5]["de"], given[7]["de"] = "", 7
    inputs = write_jsonl(tmp_path / "input.jsonl", given)
    every, run_dir = predict_cli(f"ckpt_path={translation_checkpoint}", f"input_file={inputs}", cwd=tmp_path)
    assert [row["id"] for row in every] == list(range(30))
    assert all(set(every[i]) == {"id", "source", "hypothesis"} for i in (3, 5, 7))
    rows = [row for i, row in enumerate(every) if i not in (3, 5, 7)]
    assert all(set(row) == {"id", "source", "hypothesis", "reference", "score"} for row in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = sacrebleu.corpus_bleu([r["hypothesis"] for r in rows], [[r["reference"] for r in rows]])
    assert metrics["metrics"]["bleu"] == pytest.approx(expected.score)
    assert metrics["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    for row in rows:  # one example's BLEU: its sentence BLEU, not a corpus BLEU of one sentence
        assert row["score"] == pytest.approx(sacrebleu.sentence_bleu(row["hypothesis"], [row["reference"]]).score)


@pytest.mark.slow
def test_one_text_and_plain_text_files(translation_checkpoint: Path, tmp_path: Path) -> None:
    result = run_cli_in_process(
        f"ckpt_path={translation_checkpoint}", "input=A library for Python", cwd=tmp_path, script="predict.py"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "txt").mkdir()
    lines = tmp_path / "lines.txt"
    lines.write_text("first line\n\nsecond line\n", encoding="utf-8")
    rows, _ = predict_cli(
        f"ckpt_path={translation_checkpoint}", f"input_file={lines}", "generation=beam4", cwd=tmp_path / "txt"
    )
    assert [r["source"] for r in rows] == ["first line", "second line"] and "reference" not in rows[0]
    result = run_cli_in_process(
        f"ckpt_path={translation_checkpoint}", "input=hi", "reply_to=last_turn", cwd=tmp_path, script="predict.py"
    )
    assert result.returncode == 1 and "reply_to=last_turn needs a dialogue checkpoint" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_source_length=-5", "data.max_source_length must be a positive integer, got -5."),
        ("data.max_source_length=abc", "data.max_source_length must be a positive integer, got 'abc'."),
        ("trainer.precision=foo", "trainer.precision: Precision 'foo' is invalid. Allowed precision values:"),
    ],
)
def test_a_bad_value_for_the_checkpoints_config_is_one_line(
    translation_checkpoint: Path, tmp_path: Path, override: str, message: str
) -> None:
    """predict.py builds no data module or trainer, whose checks train.py and eval.py rely on."""
    args = [f"ckpt_path={translation_checkpoint}", "input=A library for Python", override]
    result = run_cli_in_process(*args, cwd=tmp_path, script="predict.py")
    assert result.returncode == 1 and f"Error: {message}" in result.stderr, result.stderr[-2000:]


def test_an_output_file_under_home_is_written_there(
    translation_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = [f"ckpt_path={translation_checkpoint}", "input=A library for Python", "output_file='~/out.jsonl'"]
    result = run_cli_in_process(*args, cwd=tmp_path, script="predict.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "home" / "out.jsonl").is_file() and not (tmp_path / "~").exists()


@pytest.mark.slow
def test_a_missing_input_file_and_an_uncreatable_export_folder_are_named(
    translation_checkpoint: Path, tmp_path: Path
) -> None:
    result = run_cli_in_process(
        f"ckpt_path={translation_checkpoint}", "input_file=none.txt", cwd=tmp_path, script="predict.py"
    )
    assert result.returncode == 1 and "Error: input_file: file not found: 'none.txt'" in result.stderr
    (tmp_path / "a_file").write_text("")
    output_dir = tmp_path / "a_file" / "model"
    result = run_cli_in_process(
        f"ckpt_path={translation_checkpoint}", f"output_dir={output_dir}", cwd=tmp_path, script="export.py"
    )
    assert result.returncode == 1 and f"Error: output_dir='{output_dir}': cannot create it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_run_dir_records_the_checkpoints_config_with_the_overrides(
    translation_checkpoint: Path, tmp_path: Path
) -> None:
    """`.hydra/config.yaml` is the default config, composed before the checkpoint is read; `run_config.yaml` is
    what ran, as eval.py writes it."""
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a cat\n")
    _, run_dir = predict_cli(
        f"ckpt_path={translation_checkpoint}", f"input_file={inputs}", "generation.num_beams=2", cwd=tmp_path
    )
    config = OmegaConf.load(run_dir / "run_config.yaml")
    assert config.generation.num_beams == 2 and config.model.d_model == 64  # the rest is the checkpoint's own
    assert config.tokenizer.vocab_size == 400 and config.paths.output_dir == str(run_dir)
    assert config.ckpt_path is None and "input_file" not in config  # the tool's own keys are not the run's


# Runs a tool script with PyTorch unimportable: what it refuses before its own module loads (and PyTorch and
# Lightning with it) it must refuse without.
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("predict.py", ["input=hi"], "ckpt_path is required: add ckpt_path="),
        ("eval.py", [], "ckpt_path is required: add ckpt_path="),
        ("predict.py", ["ckpt_path=x.ckpt"], "Give exactly one of input_file=<file> and input="),
        (
            "predict.py",
            ["ckpt_path=x.ckpt", "input=hi", "batch_size=0"],
            "batch_size must be a positive integer, got 0",
        ),
        ("predict.py", ["ckpt_path=x.ckpt", "input=hi", "reply_to=last"], "reply_to must be one of every_turn, last_"),
        ("predict.py", ["ckpt_path=x.ckpt", "input="], 'input is empty: give the text, input="<text>".'),
        ("explain.py", ["ckpt_path=x.ckpt", "input="], 'input is empty: give the text, input="<text>".'),
        ("explain.py", ["ckpt_path=x.ckpt", "input=hi", "max_heatmap_tokens=0"], "max_heatmap_tokens must be a posit"),
        ("eval.py", ["ckpt_path=x.ckpt", "split=train"], "split must be 'test' or 'validation', got 'train'."),
        ("predict.py", ["ckpt_path=x.ckpt", "input=hi"], "ckpt_path='x.ckpt' is not a file."),
        ("eval.py", ["ckpt_path=notes.txt"], "ckpt_path='notes.txt' is not a readable checkpoint (truncated, or not"),
        ("train.py", ["ckpt_path=x.ckpt"], "ckpt_path='x.ckpt' is not a file."),
        ("train.py", ["train=false", "ckpt_path=notes.txt"], "ckpt_path='notes.txt' is not a readable checkpoint"),
        ("train.py", ["test=no"], "test must be true or false, got 'no'."),
        ("export.py", ["ckpt_path=x.ckpt", "output_dir=out", "adapter_only=yes"], "adapter_only must be true or false"),
        ("predict.py", ["ckpt_path=x.ckpt", "input=hi", "explain=1"], "explain must be true or false, got 1."),
    ],
)
def test_the_command_line_is_refused_in_one_line_before_pytorch_loads(
    tmp_path: Path, script: str, args: list[str], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(ROOT / script), *args],
        cwd=tmp_path,
        env=user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and f"Error: {message}" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_an_output_file_that_is_the_input_file_is_refused_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"en": "a cat"}\n')
    result = run_cli_in_process(
        "ckpt_path=x.ckpt", "input_file=inputs.jsonl", "output_file=inputs.jsonl", cwd=tmp_path, script="predict.py"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Error: output_file='inputs.jsonl' is the input_file: writing predictions would overwrite" in result.stderr
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(inputs)
    for output_file in (tmp_path / "sub" / ".." / "inputs.jsonl", tmp_path / "link.jsonl"):  # other names, one file
        with pytest.raises(ConfigError, match=r"output_file='.*' is the input_file"):
            check_predict(predict_config(input_file=str(inputs), output_file=str(output_file)))
    assert inputs.read_text() == '{"en": "a cat"}\n'


def predict_config(**values: object) -> DictConfig:
    defaults = {"topic": None, "interactive": False, "input": None, "input_file": None, "output_file": None}
    return OmegaConf.create({**defaults, "batch_size": 1, "explain": False, "reply_to": "every_turn", **values})


def test_an_output_file_not_named_jsonl_and_a_chat_given_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        check_predict(predict_config(input="a cat", output_file="out.csv"))
    assert str(error.value) == (
        "output_file='out.csv': predictions are written as JSON lines, one record per input; name the file .jsonl."
    )
    with pytest.raises(ConfigError, match=r"^interactive=true reads the terminal: drop input_file= and input="):
        check_predict(predict_config(interactive=True, input_file="chats.jsonl"))


def predictor_for(builder: DialoguePairs) -> Predictor:
    """A predictor whose generation echoes the source it was given (no model needed)."""
    predictor = object.__new__(Predictor)
    predictor.pair_builder = builder
    predictor.generate = lambda examples: iter([example.source for example in examples])  # type: ignore[method-assign]
    return predictor


def test_chat_contexts_start_with_the_topic_as_in_training() -> None:
    predictor = predictor_for(DialoguePairs(max_history_turns=1, topic_field="prompt"))
    topic = predictor.topic_context("  Do you <sep> have\npets? ")
    assert (
        topic == DialoguePairs(topic_field="prompt").format_topic("Do you have pets?") == ["<topic>Do you have pets?"]
    )
    assert predictor.reply(["<speaker1>hi", "<speaker2>hello"], topic) == "<topic>Do you have pets?<sep><speaker2>hello"
    assert predictor.topic_context(None) == predictor.topic_context("   ") == []
    assert predictor.topic_context(42) == ["<topic>42"]  # Hydra reads topic=42 as a number
    # A typed turn is cleaned as training cleans one: markers would fake turn boundaries.
    typed = predictor.example("hi   <speaker2>there<sep>friend ")
    assert typed.source == "<speaker1>hi there friend" and typed.context == ["<speaker1>hi there friend"]
    assert predictor.format_turn(1, " ok\n<sep> ") == "<speaker2>ok"


def test_a_topic_needs_a_model_trained_with_topics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"topic= needs a dialogue checkpoint trained with topics"):
        chat(predictor_for(DialoguePairs()), topic="Do you have any pets?")
    result = run_cli_in_process("ckpt_path=x.ckpt", "input=hi", "topic=pets", cwd=tmp_path, script="predict.py")
    assert result.returncode == 1 and "topic= is for interactive=true" in result.stderr


@pytest.mark.slow
def test_chat_and_conversation_files_keep_the_topic(chitchat_slice: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg: DictConfig = tiny_run_config(
        [
            "task=dialogue",
            f"data.train_file={chitchat_slice}",
            "data.validation_fraction=0.1",
            "data.test_fraction=0.1",
            "data.pair_builder.topic_field=prompt",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "scheduler.num_warmup_steps=1",
            "task.max_generate_examples=8",
        ],
        tmp_path,
    )
    train(cfg)
    result = run_cli_in_process(
        f"ckpt_path={best_checkpoint(cfg)}",
        "interactive=true",
        "topic=Do you have any pets?",
        cwd=tmp_path,
        script="predict.py",
        stdin_text="hello there\nhow are you?\n/quit\n",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(line.startswith("> ") for line in result.stdout.splitlines()) == 2
    (chat_dir,) = (tmp_path / "outputs" / "predict").glob("*/*")
    assert OmegaConf.load(chat_dir / "run_config.yaml").data.pair_builder.topic_field == "prompt"
    conversations = [row for row in map(json.loads, chitchat_slice.read_text().splitlines()) if row["prompt"]][:3]
    (tmp_path / "file").mkdir()
    rows, _ = predict_cli(
        f"ckpt_path={best_checkpoint(cfg)}",
        f"input_file={write_jsonl(tmp_path / 'input.jsonl', conversations)}",
        cwd=tmp_path / "file",
    )
    # Every context of a conversation starts with its prompt, as in training, and says which conversation it is.
    assert rows and all(row["source"].startswith("<topic>" + conversations[0]["prompt"]) for row in rows[:2])
    assert [row["conversation_id"] for row in rows[:2]] == [str(conversations[0]["id"])] * 2
    assert {row["conversation_id"] for row in rows} == {str(conversation["id"]) for conversation in conversations}
    # reply_to=last_turn: one reply per conversation, to its last turn, with nothing to score it against.
    (tmp_path / "last").mkdir()
    replies, run_dir = predict_cli(
        f"ckpt_path={best_checkpoint(cfg)}",
        f"input_file={tmp_path / 'input.jsonl'}",
        "reply_to=last_turn",
        cwd=tmp_path / "last",
    )
    assert [row["conversation_id"] for row in replies] == [str(conversation["id"]) for conversation in conversations]
    last_turns = [conversation["turns"][-1]["text"] for conversation in conversations]
    assert all(row["source"].endswith(turn) for row, turn in zip(replies, last_turns, strict=True))
    assert "reference" not in replies[0] and not (run_dir / "metrics.json").exists()
    # explain.py reads conversation files the same way, and says which conversation each explanation is of.
    (tmp_path / "explained").mkdir()
    result = run_cli_in_process(
        f"ckpt_path={best_checkpoint(cfg)}",
        f"input_file={tmp_path / 'input.jsonl'}",
        "reply_to=last_turn",
        cwd=tmp_path / "explained",
        script="explain.py",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (explain_dir,) = (tmp_path / "explained" / "outputs" / "explain").glob("*/*")
    explained = [json.loads(path.read_text()) for path in sorted(explain_dir.glob("example_*.json"))]
    assert [row["conversation_id"] for row in explained] == [row["conversation_id"] for row in replies]
