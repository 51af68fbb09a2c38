"""The end-of-sweep summary: a table of trials and where to look next."""

from __future__ import annotations

from typing import Any

from sweep.spec import SweepSpec


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_rows(spec: SweepSpec, result: Any) -> list[list[str]]:
    sign = 1.0 if spec.objective.direction == "minimize" else -1.0

    def key(t: Any) -> tuple[int, float]:
        ok = t.status == "completed" and t.value is not None
        return (0 if ok else 1, sign * t.value if ok else 0.0)

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
    maximize = spec.objective.direction == "maximize"
    ok = best >= threshold if maximize else best <= threshold
    relation = (">=" if maximize else "<=") if ok else ("<" if maximize else ">")
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
    if spec.acceptance.threshold is not None:
        print(acceptance_line(spec, result.best.value if result.best else None))
    print(f"MLflow UI:  make mlflow-ui   (then open http://127.0.0.1:5000, experiment '{result.experiment}')")
    print("Ray dashboard (while a sweep runs): make dashboard")
