"""The verdict's report files."""


def test_the_reports_first_screen_is_the_verdict_the_culprit_and_a_plot_per_blamed_parameter(tmp_path):
    from html import escape

    from sweep.blame import analyze
    from sweep.report import render
    from sweep.spec import validate_spec
    from sweep.verdict import judge, next_sweep
    from tests.sweep.planted import SCENARIOS, evidence_of

    scenario = SCENARIOS["lr_too_low"]
    evidence = evidence_of(scenario, 12, 0)  # the search's trials and its confirmations
    analysis = analyze(evidence)
    spec = validate_spec(
        {
            "name": "planted",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": scenario.space,
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "acceptance": {"threshold": 0.8},
        }
    )
    verdict = judge(spec, evidence)
    verdict.next_sweep = next_sweep(spec, evidence, analysis, verdict)
    render(tmp_path, spec, evidence, analysis, verdict)
    html = (tmp_path / "report.html").read_text()
    first = html[: html.index("<h2>Next sweep</h2>")]
    lr = next(f for f in analysis.params if f.param == "optim.learning_rate")
    assert '<p class="verdict" id="verdict">ACCEPT</p>' in first
    assert '<span id="blame-top">learning_rate</span>' in first
    assert first.count("<svg") == 1 and "chance level" in first and escape(lr.sentence) in first
    # a figure that cannot be drawn keeps its heading and says why (no fANOVA ranking here)
    assert "<h2>Importance (fANOVA: a ranking, not a test)</h2><p class='empty'>Not ranked" in html
    md = (tmp_path / "report.md").read_text()
    assert "## Confirmed" in md and f"- **optim.learning_rate**: {lr.sentence} — {lr.confirmation.text}" in md
    assert "**Method.** Each trial is labelled" in md
    assert any(line.startswith("- optim.learning_rate: 1e-05..0.01 -> ") for line in md.splitlines())
