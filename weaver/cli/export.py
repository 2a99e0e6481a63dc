"""`python export.py ckpt_path=... output_dir=...` / `weaver-export`: a checkpoint to a self-contained model folder."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from weaver.cli.config import config_dir, register_resolvers
from weaver.errors import WeaverError
from weaver.export import export_checkpoint


@hydra.main(config_path=str(config_dir()), config_name="export", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    try:
        export_checkpoint(cfg.ckpt_path, cfg.output_dir, adapter_only=cfg.adapter_only)
    except WeaverError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    register_resolvers()
    hydra_main()
