"""The Ray dashboard while a sweep runs, in a real browser through Ray 2.60's token authentication: the
token comes from where Ray keeps it (`sweep dashboard` prints it), the browser passes it as Ray's
dashboard cookie, and the actors page shows the running trial. The sweep never writes the token down."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright import sync_api as playwright  # (the dev extra; drives the system chromium)

from tests.integration.browser import CHROMIUM, NO_CHROMIUM

REPO = Path(__file__).parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.needs(NO_CHROMIUM if CHROMIUM is None else None)]

SPEC = (
    "name: watchray\n"
    "trial: {model: {name_or_path: tiny-bert}, adaptation: {method: full}, data: {max_rows: 160, max_length: 16},"
    " optim: {max_steps: 3000, batch_size: 8}, eval: {eval_every_steps: 500}}\n"
    "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
    "pruner: {kind: none}\nbudget: {num_trials: 1, max_concurrent_trials: 1}\n"
    "execution: {dashboard: true, verdict: false}\n"
)


def test_ray_dashboard_shows_the_running_trial_through_token_auth(tmp_path):
    (tmp_path / "s.yaml").write_text(SPEC)
    sweep = subprocess.Popen(
        [sys.executable, "-u", "-m", "sweep", "run", "s.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sweep.stdout is not None
        seen = []
        for line in sweep.stdout:
            seen.append(line)
            if line.startswith("trial 0 started"):
                break
        url = json.loads(next((tmp_path / "runs" / "watchray").glob("*/ray.json")).read_text())["dashboard"]
        assert url.startswith("http://127.0.0.1:")  # bound to this machine only
        token_out = subprocess.run(
            [sys.executable, "-m", "sweep", "dashboard"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        ).stdout
        from sweep.ray.session import auth_token

        token = auth_token()
        assert token and token in token_out and url in token_out
        body, shot = _actors_page(url, token, tmp_path / "ray.png")
        assert "trainable" in body and "ALIVE" in body  # the trial's actor, running
        without, _ = _actors_page(url, None, None)
        assert "trainable" not in without  # the dashboard's data needs the token
    finally:
        sweep.send_signal(signal.SIGINT)
        out = "".join(seen) + sweep.communicate(timeout=180)[0]
    assert sweep.returncode == 130, out[-2000:]
    # the token is never written down by the sweep: not in its output, run dir or record
    assert token not in out
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file() and "ray-logs" not in path.parts and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path
    if os.environ.get("KEEP_SCREENSHOTS"):
        import shutil

        shutil.copy(shot, REPO / "docs" / "ray-dashboard.png")


def _actors_page(url, token, png):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 800})
            if token:
                context.add_cookies([{"name": "ray-authentication-token", "value": token, "url": url}])
            page = context.new_page()
            page.goto(f"{url}/#/actors", wait_until="networkidle")
            deadline = time.time() + 30
            while time.time() < deadline and "trainable" not in page.inner_text("body") and token:
                page.wait_for_timeout(1000)
            body = page.inner_text("body")
            if png is not None:
                page.screenshot(path=str(png))
            return body, png
        finally:
            browser.close()
