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
    FAILED = "failed"  # an exception, or a configuration the trial rejects
    STOPPED = "stopped"  # the sweep's time budget ran out
    KILLED = "killed"  # the sweep was interrupted (Ctrl-C)

    @property
    def optuna_state(self) -> str:
        """The Optuna TrialState name: only completed trials carry a value, pruned ones their reports."""
        return {"running": "RUNNING", "completed": "COMPLETE", "pruned": "PRUNED"}.get(self.value, "FAIL")

    @property
    def run_status(self) -> str:
        """The MLflow run status: a trial that ran as designed FINISHED (its tag says how)."""
        return {"running": "RUNNING", "failed": "FAILED", "killed": "KILLED"}.get(self.value, "FINISHED")

    @property
    def counts_against_budget(self) -> bool:
        """A trial the user interrupted is run again on resume; every other ended trial used its slot."""
        return self not in (TrialStatus.RUNNING, TrialStatus.KILLED)


class TrialFailure(BaseModel):
    """The final report of a trial that raised instead of returning an outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["failed"] = "failed"
    error: str = Field(description="One line: the reason, or the exception type and message.")
    kind: Literal["config", "exception"] = Field(description="config: the trial rejected its configuration.")


FinalReport = Annotated[TrialOutcome | TrialFailure, Field(discriminator="status")]
_FINAL = TypeAdapter(FinalReport)


def parse_final_report(payload: str) -> TrialOutcome | TrialFailure:
    """The JSON a trial reports last -> its typed outcome or failure."""
    return _FINAL.validate_json(payload)
