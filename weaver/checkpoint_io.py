"""Checkpoint files written atomically: a kill during a save leaves the previous file whole, and a failed write
(a full disk) leaves nothing behind."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from weaver.errors import WeaverError

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"


class CheckpointWriteError(WeaverError):
    """The disk refused a checkpoint (full, read-only, gone)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.partial` beside the target, flushes it to disk, then renames it over the target
    (`os.replace` is atomic on POSIX), so readers only ever see a complete checkpoint. The file is written in the
    target's folder itself: Lightning's writer stages it in the system temp dir and copies it across, which needs
    room on both disks and leaves the copy half-done when the second fills up."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except BaseException as error:
            partial.unlink(missing_ok=True)
            # torch's zip writer reports a failed write as a RuntimeError raised while handling the OSError.
            refused = error if isinstance(error, OSError) else error.__context__
            if not isinstance(refused, OSError):
                raise
            kept = " The previous one is kept." if target.is_file() else ""
            raise CheckpointWriteError(
                f"Cannot write the checkpoint {target}: {refused.strerror or refused}.{kept} Free space there (or set "
                "paths.output_dir to another disk), then continue with resume=auto."
            ) from error


def remove_partial_checkpoints(folder: Path) -> None:
    """Half-written checkpoints of a process that died mid-save (their targets are whole)."""
    for stale in folder.glob(f"*{PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)
        log.info("Removed %s, left by a save that never finished.", stale)
