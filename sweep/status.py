"""A trial's status, and the final report a trial sends back: parsed once, used by the study, the
observer and the record alike. No third-party imports: each adapter maps the status to its own terms."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from trainers.api import TrialOutcome


class TrialStatus(StrEnum):
    """Where a trial ended (or that it is still running)."""

    RUNNING = "running"
    COMPLETED = "completed"  # ran all its steps: a candidate for best
    PRUNED = "pruned"  # stopped early by the pruner
    DIVERGED = "diverged"  # NaN/inf loss
    FAILED = "failed"  # an exception, a configuration the trial rejects, or its worker lost (after retries)
    OOM = "oom"  # out of memory: CUDA's, or the host's memory monitor killed the worker (after retries)
    TIMEOUT = "timeout"  # ran past budget.trial_timeout_s and was stopped
    STOPPED = "stopped"  # the sweep's time budget ran out
    KILLED = "killed"  # the sweep was interrupted (Ctrl-C)

    @property
    def optuna_state(self) -> str:
        """The Optuna TrialState name: only completed trials carry a value, pruned ones their reports."""
        return {"running": "RUNNING", "completed": "COMPLETE", "pruned": "PRUNED"}.get(self.value, "FAIL")

    @property
    def run_status(self) -> str:
        """The MLflow run status: a trial that ran as designed FINISHED (its tag says how)."""
        return {"running": "RUNNING", "failed": "FAILED", "oom": "FAILED", "timeout": "FAILED", "killed": "KILLED"}.get(
            self.value, "FINISHED"
        )

    @property
    def left_no_result(self) -> bool:
        """Faults and interruptions: the trial's curve says nothing about its parameters."""
        return self in (TrialStatus.FAILED, TrialStatus.OOM, TrialStatus.TIMEOUT, TrialStatus.KILLED)

    @property
    def counts_against_budget(self) -> bool:
        """A trial the user interrupted is run again on resume; every other ended trial used its slot."""
        return self not in (TrialStatus.RUNNING, TrialStatus.KILLED)


class TrialFailure(BaseModel):
    """How a trial ended without an outcome: it raised (its final report), or Ray lost or stopped it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["failed", "oom", "timeout"] = "failed"
    error: str = Field(description="One line: the reason, or the exception type and message.")
    kind: Literal["config", "exception", "oom", "worker_lost", "timeout"] = Field(
        description="config: the trial rejected its configuration; worker_lost: its process died."
    )


FinalReport = Annotated[TrialOutcome | TrialFailure, Field(discriminator="status")]
_FINAL = TypeAdapter(FinalReport)


def parse_final_report(payload: str) -> TrialOutcome | TrialFailure:
    """The JSON a trial reports last -> its typed outcome or failure."""
    return _FINAL.validate_json(payload)
