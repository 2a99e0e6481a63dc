"""One run per run dir: a second process writing there would overwrite the first one's logs and checkpoints."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from weaver.errors import WeaverError

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"


class RunDirInUse(WeaverError):
    """Another live process holds the run dir."""


def recorded_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_dir_lock(folder: Path) -> Iterator[None]:
    """Holds `folder/run.lock` (an advisory `flock`, with this process's PID in the file) while the block runs.

    The kernel releases the lock when its process dies, however it dies, so a lock left by a killed run is simply
    taken over. Only rank 0 of a multi-process run takes it (the other ranks write nothing of their own there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirInUse(
                f"{folder} is in use by another run (PID {recorded_pid(path)}): wait for it to finish or stop it, or "
                "give this run a folder of its own (hydra.run.dir=...)."
            ) from None
        previous = recorded_pid(path)
        if previous not in (None, os.getpid()):
            log.info("Took over %s from PID %d, which is no longer running.", path, previous)
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def lock_holder(folder: Path) -> int | None:
    """The PID of the live process holding `folder`'s run lock, else None."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return recorded_pid(path)
        fcntl.flock(file, fcntl.LOCK_UN)
    return None
