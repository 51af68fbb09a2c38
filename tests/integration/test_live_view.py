"""The live terminal view: in a terminal (a pty) the sweep draws rich's live panel — bars against the
trial and time budgets, counts per status, the best so far."""

import os
import pty
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SPEC = (
    "name: live\n"
    "trial: {model: {name_or_path: tiny-bert}, adaptation: {method: full}, data: {max_rows: 120, max_length: 16},"
    " optim: {max_steps: 6, batch_size: 8}, eval: {eval_every_steps: 3}}\n"
    "space:\n  optim.learning_rate: {type: categorical, choices: [1e-3, 3e-3]}\n"
    "sampler: {kind: grid}\npruner: {kind: none}\n"
    "budget: {num_trials: 2, max_concurrent_trials: 2, time_budget_s: 300}\n"
    "execution: {dashboard: false, verdict: false}\n"
)


def _in_a_terminal(cmd, cwd, env):
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_live_panel_in_a_terminal(tmp_path):
    (tmp_path / "live.yaml").write_text(SPEC)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "110", "LINES": "40"}
    code, screen = _in_a_terminal([sys.executable, "-m", "sweep", "run", "live.yaml"], tmp_path, env)
    assert code == 0, screen[-3000:]
    assert "\x1b[" in screen  # drawn, not printed
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "━" in screen and "trials" in screen and "2/2" in screen and "/300s" in screen
    assert "completed 2" in screen and "best val_loss" in screen
    # (in a pipe the same sweep prints plain lines: test_sweep_cli's resume reads them)
