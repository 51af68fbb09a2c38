"""Running a sweep: ``run_sweep`` (runner), the plan and its check (plan, preflight), the start
(startup), the record (record) and the verdict's confirmation phase (confirm_phase)."""

from sweep.run.runner import SweepResult, run_sweep

__all__ = ["SweepResult", "run_sweep"]
