"""Running a sweep: ``run_sweep`` and ``resume_sweep`` (runner), the plan and its check (plan,
preflight), the start (startup), the run dir's lock (lock), the record (record) and the verdict's
confirmation phase (confirm_phase)."""

from sweep.run.runner import SweepResult, resume_sweep, run_sweep

__all__ = ["SweepResult", "resume_sweep", "run_sweep"]
