"""The end-of-sweep summary on the console: a table of trials, the verdict's short lines, where to look next."""

from __future__ import annotations

from typing import Any

from sweep.credentials import without_credentials
from sweep.spec import SweepSpec
from sweep.status import TrialStatus


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_rows(spec: SweepSpec, result: Any) -> list[list[str]]:
    def key(t: Any) -> tuple[int, float]:
        ok = t.status == TrialStatus.COMPLETED and t.value is not None
        return (0 if ok else 1, -spec.objective.direction.score(t.value) if ok else 0.0)

    rows = []
    for t in sorted(result.trials, key=key):
        params = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in t.params.items())
        rows.append([_fmt(t.number), t.status, _fmt(t.step), _fmt(t.value) if t.value is not None else "-", params])
    return rows


def acceptance_line(spec: SweepSpec, best: float | None) -> str:
    """Does the best trial reach acceptance.threshold (in the objective's direction)?"""
    threshold = spec.acceptance.threshold
    assert threshold is not None
    if best is None:
        return f"acceptance: no completed trial to compare with threshold {threshold}: not reached"
    ok = spec.objective.direction.reaches(best, threshold)
    relation = spec.objective.direction.relation(ok)
    verdict = "reached" if ok else "not reached"
    return f"acceptance: best {spec.objective.metric} {best:.4g} {relation} threshold {threshold}: {verdict}"


def print_summary(spec: SweepSpec, result: Any) -> None:
    header = ["trial", "status", "step", spec.objective.metric, "parameters"]
    rows = summary_rows(spec, result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=False)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, [*widths, 0], strict=False)))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    print(f"\n{len(result.trials)} trials in {result.wall_s:.0f}s: {counts}")
    if result.stop_reason:
        print(f"ended early: {result.stop_reason}")
    split = result.time_split
    if "mean_first_report_s" in split:
        print(f"per trial: first report after {split['mean_first_report_s']:.1f}s on average")
    if "train_eval_share" in split:
        print(f"{100 * split['train_eval_share']:.0f}% of completed trials' wall time went to train/eval steps")
    if result.best is not None:
        print(
            f"best: trial {result.best.number}, {spec.objective.metric}={result.best.value:.4g}; "
            f"config and model in {result.run_dir / 'best'}"
        )
    if result.test_metrics:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.test_metrics.items() if "recall" not in k)
        print(f"held-out test (the chosen model only): {shown}")
    if spec.acceptance.threshold is not None and result.report is None:
        print(acceptance_line(spec, result.best.value if result.best else None))
    if result.report is not None:
        from sweep.report import short_lines

        print()
        for line in short_lines(result.report.analysis, result.report.verdict):
            print(line)
        print(f"report: {result.report.run_dir / 'report' / 'report.html'} (also in MLflow, on the sweep's run)")
    if result.tracking_uri.startswith(("http://", "https://")):  # a tracking server: its UI is at its address
        ui = without_credentials(result.tracking_uri).rstrip("/")
        print(f"MLflow UI:  {ui}   (experiment '{result.experiment}')")
    else:
        ui = "http://127.0.0.1:5000"
        print(f"MLflow UI:  make mlflow-ui   (then open {ui}, experiment '{result.experiment}')")
    if result.compare_path:
        print(f"  the trials side by side: {ui}{result.compare_path}")
    print("Ray dashboard (while a sweep runs): make dashboard")
