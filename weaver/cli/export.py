"""`python export.py ckpt_path=... output_dir=...` / `weaver-export`: a checkpoint to a self-contained model folder."""

from __future__ import annotations

from omegaconf import DictConfig

from weaver.export import export_checkpoint


def export(cfg: DictConfig) -> None:
    export_checkpoint(cfg.ckpt_path, cfg.output_dir, adapter_only=cfg.adapter_only, weights_dtype=cfg.weights_dtype)
