"""The demo sweep's report opens in a real browser: headless Chromium renders the verdict and the plots."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sweep.runner import run_sweep
from sweep.spec import load_spec

REPO = Path(__file__).parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("shared_ray"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y --no-install-recommends chromium)"),
]


def _dump_dom(page: Path) -> str:
    profile = tempfile.mkdtemp()
    try:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


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
    dom = _dump_dom(page)
    decision = result.report.verdict.decision.upper()
    assert f'<p class="verdict" id="verdict">{decision}</p>' in dom
    assert f'<span id="blame-top">{result.report.analysis.blame_top}</span>' in dom
    for title in ("Importance", "val_accuracy vs each parameter", "Learning curves", "Parallel coordinates"):
        assert f"<h2>{title}" in dom
    assert dom.count("<svg") >= 3  # the figures are inline: nothing to fetch
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and 'src="http' not in html  # offline, self-contained
