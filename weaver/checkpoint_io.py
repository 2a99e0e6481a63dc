"""Checkpoint files written atomically: a kill during a save leaves the previous file whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.partial` beside the target, flushes it to disk, then renames it over the target
    (`os.replace` is atomic on POSIX), so readers only ever see a complete checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f"{target.name}.partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        with open(partial, "rb") as file:
            os.fsync(file.fileno())
        os.replace(partial, target)
