"""`sweep history NAME` and `sweep next RUN_DIR`: the chain of sweeps of one name."""

import json

from sweep import cli
from sweep.tracking import NEXT_TAG, PREVIOUS_DIR_TAG, PREVIOUS_TAG, MlflowRecorder, record_verdict, sweep_state


def _sweep(uri, tmp_path, run_dir, tags, counts, best, verdict):
    rec = MlflowRecorder(uri, "s", tmp_path / "artifacts")
    rec.start_sweep("s", {}, {"sweep.run_dir": str(run_dir), **tags}, {})
    rec.finish_sweep({"best_value": best}, {"sweep.counts": json.dumps(counts)})
    record_verdict(uri, rec.parent_id, {"verdict": verdict, "blame.top": "learning_rate"}, {}, [])
    return rec


def test_history_lists_the_chain_oldest_first(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = _sweep(uri, tmp_path, "/r/s/1", {}, {"completed": 3, "pruned": 2}, 0.81234, "redesign")
    second = MlflowRecorder(uri, "s", tmp_path / "artifacts")
    second.start_sweep(
        "s", {}, {"sweep.run_dir": "/r/s/2", PREVIOUS_TAG: first.parent_id, PREVIOUS_DIR_TAG: "/r/s/1"}, {}
    )
    second.link_next(first.parent_id)
    second.link_next("no-such-run")  # another store's sweep: no link, no error
    second.finish_sweep({"best_value": 0.9}, {"sweep.counts": json.dumps({"completed": 4})})
    record_verdict(uri, second.parent_id, {"verdict": "accept", "blame.top": "none"}, {}, [])
    assert sweep_state(uri, first.parent_id)[NEXT_TAG] == second.parent_id

    assert cli.main(["history", "s", "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["started", "run", "run", "dir", "trials", "verdict", "best", "top", "blame", "previous"]
    rows = [line.split()[2:] for line in lines[1:]]  # after the date and time
    assert rows == [
        [first.parent_id[:8], "/r/s/1", "5", "redesign", "0.8123", "learning_rate", "-"],
        [second.parent_id[:8], "/r/s/2", "4", "accept", "0.9", "none", first.parent_id[:8]],
    ]


def test_history_of_an_unknown_name_is_one_line_and_exit_2(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _sweep(uri, tmp_path, "/r/s/1", {}, {"completed": 1}, 0.5, "redesign")
    assert cli.main(["history", "nope", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: history: no sweep named 'nope' in {uri} (sweeps here: Default, s); pass a spec's name "
        "(or its tracking.experiment), with --tracking-uri or --runs-dir where it was recorded"
    ]
    # a store that is not there is read as empty, and not made
    missing = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    assert cli.main(["history", "s", "--tracking-uri", missing]) == 2
    assert f"in {missing} (it holds no sweep yet)" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_next_without_a_report_says_how_to_write_it(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "s" / "1"
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.json").write_text("{}")
    assert cli.main(["next", str(run_dir)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: run_dir: '{run_dir}' has no report/next_sweep.yaml; write it with: sweep report {run_dir}"
    ]
