"""`python export.py ckpt_path=... output_dir=...` / `weaver-export`: a checkpoint to a self-contained model folder."""

from __future__ import annotations

from omegaconf import DictConfig

from weaver.errors import ConfigError
from weaver.export import export_checkpoint

EXPORT_KEYS = ("ckpt_path", "output_dir", "adapter_only", "weights_dtype")


def export(cfg: DictConfig) -> None:
    added = [key for key in cfg if key not in EXPORT_KEYS]  # `++model.memory.top_k=4` adds a node nothing reads
    if added:
        raise ConfigError(
            f"export.py takes {', '.join(EXPORT_KEYS)}, not {', '.join(added)}: it writes the checkpoint's model as it "
            "was trained (train or fine-tune with other settings first)."
        )
    export_checkpoint(cfg.ckpt_path, cfg.output_dir, adapter_only=cfg.adapter_only, weights_dtype=cfg.weights_dtype)
