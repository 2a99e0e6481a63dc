"""LightningModules: the shared sequence-to-sequence task and one small subclass per task."""

from weaver.tasks.seq2seq import Seq2SeqTask
from weaver.tasks.translation import TranslationTask

__all__ = ["Seq2SeqTask", "TranslationTask"]
