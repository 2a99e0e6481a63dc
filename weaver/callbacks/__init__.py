"""Lightning callbacks of the platform (the stock ones are configured in conf/callbacks/)."""

from weaver.callbacks.checkpoints import LastCheckpoint
from weaver.callbacks.ema import ExponentialMovingAverage
from weaver.callbacks.non_finite import FiniteModelCheckpoint, NonFiniteLossGuard
from weaver.callbacks.preemption import CheckpointOnPreemption
from weaver.callbacks.progress import ProgressBar
from weaver.callbacks.run_config import RunConfigInCheckpoint
from weaver.callbacks.throughput import ThroughputMonitor
from weaver.callbacks.time_limit import StopAtTimeLimitAfterValidation

__all__ = [
    "CheckpointOnPreemption",
    "ExponentialMovingAverage",
    "FiniteModelCheckpoint",
    "LastCheckpoint",
    "NonFiniteLossGuard",
    "ProgressBar",
    "RunConfigInCheckpoint",
    "StopAtTimeLimitAfterValidation",
    "ThroughputMonitor",
]
