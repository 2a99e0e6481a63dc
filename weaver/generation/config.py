"""Decoding settings, named like HuggingFace's `GenerationConfig` so the knobs are familiar."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from weaver.errors import ConfigError, dataclass_values
from weaver.generation.mbr import UTILITIES

# The field annotations (strings under `from __future__ import annotations`) and the values each accepts.
FIELD_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "int | None": (int, type(None))}


@dataclass
class GenerationConfig:
    """How to decode.

    Greedy by default; ``num_beams > 1`` selects beam search, ``do_sample=True`` selects sampling
    (``temperature`` first, then ``top_k`` and ``top_p`` filtering, drawn from a ``torch.Generator``
    seeded with ``seed`` when given). ``min_new_tokens`` forbids EOS before that many tokens.
    ``mbr_num_samples > 0`` (with sampling) draws that many outputs per source and keeps the one that agrees most
    with the others under ``mbr_metric`` (minimum Bayes risk decoding, `weaver.generation.mbr`), wherever outputs
    are decoded to text: validation, test and prediction.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0  # beam score = sum_logprob / length ** length_penalty
    no_repeat_ngram_size: int = 0  # 0 = off
    do_sample: bool = False
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    temperature: float = 1.0
    seed: int | None = None
    mbr_num_samples: int = 0  # 0 = off
    mbr_metric: str = "bleu"  # a key of weaver.generation.mbr.UTILITIES

    def __post_init__(self) -> None:
        for field in fields(self):
            value, allowed = getattr(self, field.name), FIELD_TYPES[field.type]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ConfigError(f"generation.{field.name} must be {field.type}, got {value!r}")
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            (
                "min_new_tokens",
                0 <= self.min_new_tokens <= self.max_new_tokens,
                f"must be between 0 and generation.max_new_tokens ({self.max_new_tokens}; set it lower too)",
            ),
            ("num_beams", self.num_beams >= 1, "must be >= 1"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "must be >= 0 (0 = off)"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("temperature", self.temperature > 0.0, "must be > 0"),
            (
                "do_sample",
                not (self.do_sample and self.num_beams > 1),
                "with num_beams > 1 (beam sampling) is not supported; use one or the other",
            ),
            ("mbr_num_samples", self.mbr_num_samples >= 0, "must be >= 0 (0 = off)"),
            (
                "mbr_num_samples",
                self.mbr_num_samples == 0 or self.do_sample,
                "needs do_sample=true: minimum Bayes risk decoding chooses among sampled outputs",
            ),
            ("mbr_metric", self.mbr_metric in UTILITIES, "must be " + " or ".join(map(repr, UTILITIES))),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"generation.{name} {rule}, got {getattr(self, name)!r}")

    @property
    def outputs_per_source(self) -> int:
        """How many outputs `generate` returns per source, side by side: the samples MBR chooses among, else one."""
        return self.mbr_num_samples or 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationConfig:
        return cls(**dataclass_values(cls, values, "generation"))
