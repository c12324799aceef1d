"""One job runner for all background work: `wait: false` writes, outbox retries, sweeps, consolidation."""

from memsvc.jobs.queue import InProcessQueue
from memsvc.jobs.runner import Handler, JobContext, JobInterrupted, JobRunner

__all__ = ["Handler", "InProcessQueue", "JobContext", "JobInterrupted", "JobRunner"]
