"""LightningModules: the shared sequence-to-sequence task and one small subclass per task."""

from weaver.tasks.dialogue import DialogueTask
from weaver.tasks.pretrain import PretrainTask
from weaver.tasks.seq2seq import Seq2SeqTask
from weaver.tasks.summarization import SummarizationTask
from weaver.tasks.translation import TranslationTask

__all__ = ["DialogueTask", "PretrainTask", "Seq2SeqTask", "SummarizationTask", "TranslationTask"]
