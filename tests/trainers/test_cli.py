import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m trainers run ARGS` in this process (its exit code, stdout, stderr): the test process has
    torch imported already; test_bad_input_... runs the real command."""
    from trainers.cli import main

    code = main(["run", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainers", "run", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("config", "extra", "metric"),
    [
        ("configs/classify.yaml", ["model.name_or_path=tiny-bert", "data.max_rows=120"], "val_accuracy"),
        ("configs/sft.yaml", ["data.max_rows=80", "model.name_or_path=tiny-gpt2"], "val_exact_match"),
    ],
)
def test_run_prints_a_line_per_eval_and_json_last(capsys, monkeypatch, config, extra, metric):
    monkeypatch.chdir(REPO)
    code, out, err = _main(
        capsys, config, *extra, "optim.max_steps=4", "eval.eval_every_steps=2", "optim.batch_size=8", "--json"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    evals = [line for line in lines if line.startswith("step ")]
    assert len(evals) == 2 and f"{metric}=" in evals[0]
    outcome = json.loads(lines[-1])
    assert outcome["status"] == "completed" and outcome["num_steps"] == 4
    assert metric in outcome["final_metrics"]


def test_bad_input_is_one_line_per_problem_and_exit_code_2(tmp_path):
    proc = _run("configs/classify.yaml", "optim.learning_rat=1", "data.max_length=0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert sorted(proc.stderr.splitlines()) == [
        "error: data.max_length: 0 must be > 0",
        "error: optim.learning_rat: unknown key; remove it or check the spelling",
    ]
    missing = _run(str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_data_errors_exit_2_before_training(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, _, err = _main(capsys, "configs/classify.yaml", "model.name_or_path=tiny-bert", "data.label_column=sentiment")
    assert code == 2
    assert "error: data.label_column: column 'sentiment' is not in" in err
    assert "columns are ['text', 'label']" in err
