"""`make bench-trial` (part 2): the demo sweep's wall time and where each trial's time goes.

Runs search_spaces/demo.yaml (real MiniLM, real Ray, MLflow, Optuna) in a temporary directory and
prints: sweep wall time, trials by status, mean seconds from a trial's start to its first report, the
share of completed trials' wall time spent in training/eval steps, and model-load / tokenize time for
the first trial of each worker vs the trials that reuse a worker (reuse_actors keeps trainers' caches).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sweep.run import run_sweep
    from sweep.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(
            REPO / "search_spaces" / "demo.yaml", [f"execution.runs_dir={tmp}/runs", "execution.dashboard=false"]
        )
        result = run_sweep(spec, echo=lambda line: None)
    timings = [t.outcome.timings.model_dump() for t in result.trials if t.outcome]
    first = [t for t in timings if t["tokenize_s"] > 0.001]
    reused = [t for t in timings if t["tokenize_s"] <= 0.001]

    def mean(rows: list[dict[str, float]], key: str) -> str:
        return f"{sum(r[key] for r in rows) / len(rows):.3f}s" if rows else "-"

    print(f"demo sweep: {result.wall_s:.1f}s wall, {len(result.trials)} trials {result.counts}")
    print(f"mean time to first report: {result.time_split.get('mean_first_report_s', 0):.2f}s")
    print(f"train+eval share of completed trials' wall time: {100 * result.time_split.get('train_eval_share', 0):.0f}%")
    print(f"model load: fresh worker {mean(first, 'load_s')}, reused worker {mean(reused, 'load_s')}")
    print(f"tokenize:   fresh worker {mean(first, 'tokenize_s')}, reused worker {mean(reused, 'tokenize_s')}")


if __name__ == "__main__":
    main()
