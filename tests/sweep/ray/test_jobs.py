"""`sweep submit`'s checks, made here before anything is sent (the cluster runs are in
tests/integration/test_cluster_jobs.py)."""

import pathspec
import pytest

from sweep.cli import main
from sweep.ray.jobs import EXCLUDES


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("docker/.env", False),
        (".env", False),
        ("prod.env", False),
        ("certs/server.pem", False),
        ("keys/id.key", False),
        (".netrc", False),
        ("runs/demo/x/optuna.db", False),
        (".venv/bin/python", False),
        (".git/config", False),
        ("sweep/__pycache__/cli.cpython-311.pyc", False),
        ("sweep/cli.py", True),
        ("data/train.csv", True),  # often git-ignored: sent all the same
        ("search_spaces/demo.yaml", True),
        ("docker/env.example", True),
    ],
)
def test_what_travels_with_a_job(path, sent):
    # Ray matches working_dir excludes as gitignore patterns (pathspec, gitwildmatch)
    spec = pathspec.PathSpec.from_lines("gitwildmatch", EXCLUDES)
    assert spec.match_file(path) is not sent


def _spec(tmp_path, url_line: str = "") -> str:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {max_rows: 40}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n" + url_line
    )
    return str(path)


def test_a_literal_password_is_refused_before_anything_is_sent(tmp_path, capsys):
    spec = _spec(tmp_path, "execution: {storage: 'postgresql+psycopg://u:Plain-Pw-31@db/optuna'}\n")
    assert main(["submit", spec, "--address", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: execution.storage: the URL holds a password, which would travel with the job")
    assert "${ENV_VAR}" in err and "Plain-Pw-31" not in err
    # a reference is fine (it is read on the cluster): the next problem is the unreachable address
    spec = _spec(tmp_path, "execution: {storage: 'postgresql+psycopg://u:${PGPASSWORD}@db/optuna'}\n")
    assert main(["submit", spec, "--address", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("error: --address: cannot reach Ray's Job API at http://127.0.0.1:9")


def test_relative_data_needs_submitting_from_the_working_dir(tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "d.csv").write_text(
        "text,label\n" + "".join(f"row {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {path: project/data/d.csv}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n"
    )
    monkeypatch.chdir(tmp_path)
    code = main(["submit", str(spec), "--working-dir", str(project), "--address", "http://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trial.data.path: 'project/data/d.csv' is relative: read from here")
    assert f"run sweep submit from {project}" in err


def test_no_address_and_no_local_cluster_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["status", "some-job"]) == 2
    assert "make cluster-up" in capsys.readouterr().err
