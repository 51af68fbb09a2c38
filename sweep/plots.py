"""The report's figures as inline SVG (matplotlib, no network, no script): importance bars, the
objective against each parameter (pruned trials included), learning curves and parallel coordinates,
coloured by trial status."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sweep.outcomes import scores_at
from sweep.status import TrialStatus

STATUS_COLORS: dict[str, str] = {
    TrialStatus.COMPLETED: "#1b7837",
    TrialStatus.PRUNED: "#f1a340",
    TrialStatus.DIVERGED: "#d73027",
    TrialStatus.FAILED: "#762a83",
    TrialStatus.OOM: "#542788",
    TrialStatus.TIMEOUT: "#998ec3",
    TrialStatus.STOPPED: "#878787",
    TrialStatus.KILLED: "#4d4d4d",
}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _legend(ax: Any, statuses: set[str]) -> None:
    handles = [
        plt.Line2D([], [], color=STATUS_COLORS.get(s, "#000"), marker="o", ls="", label=s) for s in sorted(statuses)
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")


def importance(analysis: Any) -> str:
    rows = [(f.param, f.importance) for f in analysis.params if f.importance is not None]
    if not rows:
        return ""
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1))
    colours = []
    for f in sorted((f for f in analysis.params if f.importance is not None), key=lambda f: f.importance):
        colours.append("#b2182b" if f.blame else "#1b7837" if f.keep else "#999999")
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color=colours)
    ax.set_xlabel("importance (red: blamed, green: kept, grey: no evidence)")
    return _svg(fig)


def _position(value: Any, choices: list[Any] | None, log: bool) -> float:
    if choices is not None:
        return float(choices.index(value)) if value in choices else float("nan")
    return math.log10(value) if log and value > 0 else float(value)


def objective_vs_params(evidence: Any, analysis: Any) -> str:
    params = [f.param for f in analysis.params]
    if not params or analysis.common_step is None:
        return ""
    sign = evidence.direction.sign
    scores = scores_at(evidence.trials, analysis.common_step, sign, evidence.data.num_folds > 1)
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, constrained_layout=True)
    by_number = {t.number: t for t in evidence.trials}
    for ax, param in zip(axes.flat, params, strict=False):
        spec = evidence.space.get(param, {})
        choices = list(spec["choices"]) if spec.get("type") == "categorical" else None
        for number, score in scores.items():
            t = by_number[number]
            if param in t.params:
                x = _position(t.params[param], choices, bool(spec.get("log")))
                ax.scatter(
                    x,
                    sign * score,
                    color=STATUS_COLORS.get(t.status, "#000"),
                    marker="x" if t.status == TrialStatus.PRUNED else "o",
                )
        if choices is not None:
            ax.set_xticks(range(len(choices)), [str(c) for c in choices], rotation=20, fontsize=8)
        ax.set_title(param + (" (log10)" if spec.get("log") else ""), fontsize=9)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    _legend(axes.flat[0], {t.status for t in evidence.trials if t.number in scores})
    return _svg(fig)


MARKERS = {"learned": "o", "flat": "s", "diverged": "v", "censored": "x"}


def finding(evidence: Any, analysis: Any, f: Any) -> str:
    """One blamed parameter: each trial's objective at the compared step against the parameter, the
    chance level drawn, the blamed region shaded; marker by outcome, colour by status, and each
    confirmation trial circled with an arrow from the configuration it perturbs."""
    labels = {lab.number: lab for lab in analysis.labels}
    by_number = {t.number: t for t in evidence.trials}
    spec = evidence.space.get(f.param, {})
    choices = list(spec["choices"]) if spec.get("type") == "categorical" else None
    log = bool(spec.get("log"))
    sign = evidence.direction.sign
    shown = [n for n in labels if f.param in by_number[n].params]
    if not shown:
        return ""
    fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
    if f.blame is not None and f.blame.numeric:
        for lo, hi in f.blame.intervals:
            ax.axvspan(_position(lo, None, log), _position(hi, None, log), color="#b2182b", alpha=0.12, lw=0)
    if analysis.chance is not None:
        ax.axhline(analysis.chance, color="#555", ls="--", lw=1)
        ax.annotate(
            "chance level", (0.01, analysis.chance), xycoords=("axes fraction", "data"), fontsize=8, va="bottom"
        )
    points: dict[int, tuple[float, float]] = {}
    for n in shown:
        t, lab = by_number[n], labels[n]
        x = _position(t.params[f.param], choices, log)
        y = sign * lab.score if lab.outcome != "diverged" else (analysis.chance if analysis.chance is not None else 0.0)
        points[n] = (x, y)
        confirmation = t.confirmation is not None
        marker = MARKERS.get(lab.outcome, "o")
        ring: dict[str, Any] = {"edgecolors": "#000", "linewidths": 1.5} if confirmation and marker != "x" else {}
        ax.scatter(
            x,
            y,
            marker=marker,
            color=STATUS_COLORS.get(t.status, "#000"),
            s=70 if confirmation else 36,
            zorder=3,
            **ring,
        )
    for n in shown:
        c = by_number[n].confirmation
        if c is not None and c.param == f.param and c.of in points:
            ax.annotate("", points[n], points[c.of], arrowprops={"arrowstyle": "->", "color": "#333"})
            ax.annotate(f"confirmation {n}", points[n], fontsize=8, xytext=(4, 4), textcoords="offset points")
    if choices is not None:
        ax.set_xticks(range(len(choices)), [str(c) for c in choices], rotation=20, fontsize=8)
    ax.set_xlabel(f.param + (" (log10)" if log else ""))
    ax.set_ylabel(f"{evidence.objective} at step {analysis.common_step}")
    handles = [
        plt.Line2D([], [], color="#333", marker=m, ls="", label=k)
        for k, m in MARKERS.items()
        if k in {labels[n].outcome for n in shown}
    ]
    handles.append(plt.Line2D([], [], color="#fff", marker="o", markeredgecolor="#000", ls="", label="confirmation"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    return _svg(fig)


def curves(evidence: Any) -> str:
    shown = [t for t in evidence.trials if t.curve]
    if not shown:
        return ""
    fig, ax = plt.subplots(figsize=(8, 4))
    for t in shown:
        steps = sorted(t.curve)
        ax.plot(steps, [t.curve[s] for s in steps], color=STATUS_COLORS.get(t.status, "#000"), marker=".", alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(evidence.objective)
    _legend(ax, {t.status for t in shown})
    return _svg(fig)


def parallel(evidence: Any, analysis: Any) -> str:
    params = [f.param for f in analysis.params]
    if not params or analysis.common_step is None:
        return ""
    sign = evidence.direction.sign
    scores = scores_at(evidence.trials, analysis.common_step, sign, evidence.data.num_folds > 1)
    by_number = {t.number: t for t in evidence.trials}
    axes_values: dict[str, dict[int, float]] = {}
    for param in params:
        spec = evidence.space.get(param, {})
        choices = list(spec["choices"]) if spec.get("type") == "categorical" else None
        raw = {
            n: _position(by_number[n].params[param], choices, bool(spec.get("log")))
            for n in scores
            if param in by_number[n].params
        }
        low, high = (min(raw.values()), max(raw.values())) if raw else (0.0, 1.0)
        axes_values[param] = {n: (v - low) / (high - low) if high > low else 0.5 for n, v in raw.items()}
    low, high = min(scores.values()), max(scores.values())
    axes_values[evidence.objective] = {n: (s - low) / (high - low) if high > low else 0.5 for n, s in scores.items()}
    names = list(axes_values)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    for n in scores:
        xs = [i for i, name in enumerate(names) if n in axes_values[name]]
        ax.plot(
            xs, [axes_values[names[i]][n] for i in xs], color=STATUS_COLORS.get(by_number[n].status, "#000"), alpha=0.7
        )
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])
    _legend(ax, {by_number[n].status for n in scores})
    return _svg(fig)
