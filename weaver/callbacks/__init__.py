"""Lightning callbacks of the platform (the stock ones are configured in conf/callbacks/)."""

from weaver.callbacks.preemption import CheckpointOnPreemption
from weaver.callbacks.run_config import RunConfigInCheckpoint

__all__ = ["CheckpointOnPreemption", "RunConfigInCheckpoint"]
