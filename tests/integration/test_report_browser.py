"""The demo sweep's report opens in a real browser: headless Chromium renders the verdict and the plots."""

from pathlib import Path

import pytest

from sweep.run import run_sweep
from sweep.spec import load_spec
from tests.integration.browser import CHROMIUM, NO_CHROMIUM, dump_dom

REPO = Path(__file__).parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("shared_ray"),
    pytest.mark.needs(NO_CHROMIUM if CHROMIUM is None else None),
]


def test_demo_report_renders_the_verdict_and_the_plots_in_chromium(tmp_path):
    spec = load_spec(
        REPO / "search_spaces" / "demo.yaml",
        [
            "budget.num_trials=4",
            "trial.optim.max_steps=30",
            "trial.data.max_rows=400",
            f"execution.runs_dir={tmp_path}/runs",
            "execution.dashboard=false",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
    )
    result = run_sweep(spec, echo=lambda line: None)
    page = result.run_dir / "report" / "report.html"
    dom = dump_dom(page.resolve().as_uri(), budget_ms=2000)
    decision = result.report.verdict.decision.upper()
    assert f'<p class="verdict" id="verdict">{decision}</p>' in dom
    assert f'<span id="blame-top">{result.report.analysis.blame_top}</span>' in dom
    for title in ("Importance", "val_accuracy vs each parameter", "Learning curves", "Parallel coordinates"):
        assert f"<h2>{title}" in dom
    # fANOVA ranks only 4 or more compared trials; with fewer (a trial censored at chance) the heading
    # stays and says why
    ranked = any(f.importance is not None for f in result.report.analysis.params)
    assert ("Not ranked: fANOVA needs at least 4 compared trials" in dom) is not ranked
    assert dom.count("<svg") >= 3 + ranked  # the figures are inline: nothing to fetch
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and 'src="http' not in html  # offline, self-contained
