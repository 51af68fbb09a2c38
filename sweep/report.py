"""The verdict's files: report.md, report.html (self-contained, offline), blame.json, next_sweep.yaml."""

from __future__ import annotations

import json
from typing import Any

from sweep.run_dir import write_atomic
from sweep.spec import SweepSpec


def render(out: Any, spec: SweepSpec, evidence: Any, analysis: Any, verdict: Any) -> list[Any]:
    """Write the report files into ``out``; returns their paths."""
    import yaml

    files = {
        "report.md": markdown(spec, evidence, analysis, verdict),
        "report.html": html(spec, evidence, analysis, verdict),
        "blame.json": json.dumps(
            {
                "verdict": verdict.decision,
                "reasons": verdict.reasons,
                "best_trial": verdict.best.number if verdict.best else None,
                "registered_model": list(verdict.registered) if verdict.registered else None,
                "analysis": analysis.model_dump(mode="json"),
            },
            indent=1,
        ),
        "next_sweep.yaml": "# Written by `sweep report`: run it with `sweep run THIS_FILE`.\n"
        + yaml.safe_dump(verdict.next_sweep, sort_keys=False),
    }
    paths = []
    for name, text in files.items():
        path = out / name
        write_atomic(path, text)  # a reader (a browser, `sweep next`) never finds half a file
        paths.append(path)
    return paths


def _finding_rows(analysis: Any) -> list[list[str]]:
    order = {"blamed": 0, "suspect": 1, "no_evidence": 2}
    rows = []
    for f in sorted(analysis.params, key=lambda f: (order[f.status], f.p_value or 1.0)):
        rows.append(
            [
                f.param,
                f.component,
                f.status + (f" ({f.evidence_kind})" if f.status == "blamed" else ""),
                f.blame.label() if f.blame else "-",
                f.keep.label() if f.keep else "-",
                "-" if f.p_value is None else f"{f.p_value:.2g} / {f.p_adjusted:.2g}",
                "-" if f.posterior is None or f.status == "no_evidence" else f"{f.posterior:.3f}",
                f"{f.importance:.2f}" if f.importance is not None else "-",
                f.sentence or f.note,
            ]
        )
    return rows


FINDING_HEADER = [
    "parameter",
    "component",
    "finding",
    "blame",
    "keep",
    "p / Holm",
    "P(win > lose)",
    "importance",
    "counts",
]


def _culprit(analysis: Any) -> str:
    """The top culprit with its sentence."""
    return f"{analysis.blame_top} — {analysis.blame_reason}"


def _confirmations(analysis: Any) -> list[str]:
    return [f.confirmation.text for f in analysis.params if f.confirmation is not None]


def markdown(spec: SweepSpec, evidence: Any, analysis: Any, verdict: Any) -> str:
    lines = [
        f"# Sweep '{spec.name}': {verdict.decision.upper()}",
        "",
        *[f"- {r}" for r in verdict.reasons],
    ]
    if verdict.registered:
        lines.append(
            f"- registered as model '{verdict.registered[0]}' version {verdict.registered[1]} (alias candidate)"
        )
    blamed = [f for f in analysis.params if f.status == "blamed"]
    suspects = [f for f in analysis.params if f.status == "suspect"]
    lines += ["", f"**Top culprit:** {_culprit(analysis)}", ""]
    if blamed:
        lines += ["## Confirmed", ""] if any(f.evidence_kind == "confirmed" for f in blamed) else []
        lines += [
            f"- **{f.param}**: {f.sentence} — {f.confirmation.text}" for f in blamed if f.evidence_kind == "confirmed"
        ]
        observed = [f for f in blamed if f.evidence_kind == "observed"]
        if observed:
            lines += ["", "## Observed (the search's trials; not confirmed by an ablation)", ""]
            lines += [f"- **{f.param}**: {f.sentence} (p = {f.p_value:.2g}, Holm {f.p_adjusted:.2g})" for f in observed]
    if suspects:
        lines += ["", "## Suspects (suggestive, not significant, not confirmed)", ""]
        lines += [f"- {f.param}: {f.sentence} (p = {f.p_value:.2g})" for f in suspects]
    refuted = [f for f in analysis.params if f.confirmation is not None and f.confirmation.confirmed is False]
    if refuted:
        lines += ["", "## Not reproduced", ""] + [f"- {f.param}: {f.confirmation.text}" for f in refuted]
    lines += [
        "",
        f"Evidence: {analysis.evidence}.",
        "",
        "| " + " | ".join(FINDING_HEADER) + " |",
        "|" + "---|" * len(FINDING_HEADER),
        *["| " + " | ".join(r) + " |" for r in _finding_rows(analysis)],
        "",
        f"**Method.** {analysis.method}",
        "",
        "## Trials",
        "",
        "| trial | status | outcome | diagnosis | why |",
        "|---|---|---|---|---|",
        *[
            f"| {d.number} | {d.status} | {_outcome(analysis, d.number, evidence)} | {d.diagnosis} | {d.reason} |"
            for d in analysis.trials
        ],
        "",
        "## Data",
        "",
        *[f"- {'ok' if c.ok else 'PROBLEM'} — {c.name}: {c.detail}" for c in analysis.data],
        "",
        "## Next",
        "",
        "`next_sweep.yaml` beside this report (run it with `sweep run next_sweep.yaml`):",
        "",
        *([f"- {c}" for c in verdict.changes] or ["- no change: the same space again"]),
    ]
    return "\n".join(lines) + "\n"


def _outcome(analysis: Any, number: int, evidence: Any) -> str:
    label = next((lab.outcome for lab in analysis.labels if lab.number == number), "-")
    trial = next((t for t in evidence.trials if t.number == number), None)
    if trial is not None and trial.confirmation is not None:
        label += f" (confirmation: {trial.confirmation.param})"
    return label


def html(spec: SweepSpec, evidence: Any, analysis: Any, verdict: Any) -> str:
    """One self-contained page: inline SVG plots, no script, no network. Its first screen is the
    verdict, the top culprit with its sentence, and one plot per blamed parameter."""
    from html import escape

    from sweep import plots

    colour = "#1b7837" if verdict.decision == "accept" else "#b2182b"

    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    blamed = [f for f in analysis.params if f.status == "blamed"]
    findings_list = "".join(
        f"<li class='{'bad' if f.status == 'blamed' else ''}'>{escape(finding_line(f))}</li>"
        for f in analysis.params
        if f.status != "no_evidence" or f.confirmation is not None
    )
    first = "".join(
        f"<figure><figcaption><b>{escape(f.param)}</b>: {escape(f.sentence)}</figcaption>"
        f"<div class='fig'>{plots.finding(evidence, analysis, f)}</div></figure>"
        for f in blamed
    )
    trials = table(
        ["trial", "status", "outcome", "diagnosis", "why"],
        [
            [str(d.number), d.status, _outcome(analysis, d.number, evidence), d.diagnosis, d.reason]
            for d in analysis.trials
        ],
    )
    checks = "".join(
        f"<li class='{'ok' if c.ok else 'bad'}'>{escape(c.name)}: {escape(c.detail)}</li>" for c in analysis.data
    )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in verdict.reasons)
    changes = "".join(f"<li>{escape(c)}</li>" for c in verdict.changes) or "<li>no change: the same space again</li>"
    registered = (
        f"<p>Registered as model <b>{escape(verdict.registered[0])}</b> version {verdict.registered[1]} "
        "(alias <code>candidate</code>).</p>"
        if verdict.registered
        else ""
    )
    # (title, figure, what the reader sees when there is no figure)
    figures = [
        (
            "Importance (fANOVA: a ranking, not a test)",
            plots.importance(analysis),
            "Not ranked: fANOVA needs at least 4 compared trials (censored and confirmation trials sit out).",
        ),
        (
            f"{spec.objective.metric} vs each parameter (at step {analysis.common_step})",
            plots.objective_vs_params(evidence, analysis),
            "No trial reached a common step.",
        ),
        ("Learning curves", plots.curves(evidence), "No trial reported a score."),
        ("Parallel coordinates", plots.parallel(evidence, analysis), "No searched parameter, or no common step."),
    ]
    body = "".join(
        f"<h2>{escape(title)}</h2>"
        + (f"<div class='fig'>{svg}</div>" if svg else f"<p class='empty'>{escape(why)}</p>")
        for title, svg, why in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep {escape(spec.name)}: {verdict.decision}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
.verdict{{font-size:2em;color:{colour};font-weight:bold;margin:0.2em 0}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
li.bad{{color:#b2182b}}li.ok{{color:#1b7837}}.fig svg{{max-width:100%;height:auto}}
figure{{display:inline-block;margin:0.5em;max-width:540px;vertical-align:top}}
</style></head><body>
<h1>Sweep '{escape(spec.name)}'</h1>
<p class="verdict" id="verdict">{verdict.decision.upper()}</p>
<ul>{reasons}</ul>{registered}
<p><b>Top culprit:</b> <span id="blame-top">{escape(analysis.blame_top)}</span> — {escape(analysis.blame_reason)}</p>
<div id="blamed">{first}</div>
<ul id="findings">{findings_list}</ul>
<h2>Next sweep</h2><ul>{changes}</ul>
<h2>Findings</h2>
<p>Evidence: {escape(analysis.evidence)}.</p>
{table(FINDING_HEADER, _finding_rows(analysis))}
<p><b>Method.</b> {escape(analysis.method)}</p>
{body}
<h2>Trials</h2>{trials}
<h2>Data</h2><ul>{checks}</ul>
</body></html>
"""


def finding_line(f: Any) -> str:
    """One parameter's finding as a line: what it says, its counts, its test and its confirmation."""
    p = "" if f.p_value is None else f" (p = {f.p_value:.2g}, Holm {f.p_adjusted:.2g})"
    if f.status == "blamed":
        how = "confirmed" if f.evidence_kind == "confirmed" else "observed"
        text = f"BLAME {f.blame.label()}, keep {f.keep.label()} [{how}] — {f.sentence}{p}"
    elif f.status == "suspect":
        text = f"suspect, not confirmed — {f.sentence}{p}"
    else:
        text = f"no evidence — {f.note}"
    if f.confirmation is not None:
        text += f"; confirmation: {f.confirmation.text}"
    return f"{f.param}: {text}"


def short_lines(analysis: Any, verdict: Any) -> list[str]:
    """The terminal's short version."""
    lines = [f"verdict: {verdict.decision.upper()} — " + "; ".join(verdict.reasons)]
    if verdict.registered:
        lines.append(f"registered: model '{verdict.registered[0]}' version {verdict.registered[1]} (alias candidate)")
    lines.append(f"blame: {analysis.blame_top} — {analysis.blame_reason}")
    order = {"blamed": 0, "suspect": 1, "no_evidence": 2}
    for f in sorted(analysis.params, key=lambda f: (order[f.status], f.p_value or 1.0)):
        lines.append(f"  {finding_line(f)}")
    flat = [d.number for d in analysis.trials if d.diagnosis == "flat"]
    if flat:
        lines.append(f"  flat (never left chance level {analysis.chance:.3g}): trials {', '.join(map(str, flat))}")
    if analysis.comparison is not None:
        lines.append(f"  {analysis.comparison.text}")
    for check in analysis.data:
        if not check.ok and check.name != "validation_size":  # that one is the comparison line above
            lines.append(f"  data: {check.detail}")
    for change in verdict.changes:
        lines.append(f"  next sweep: {change}")
    return lines
