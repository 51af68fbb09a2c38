"""The benchmark's arithmetic on hand-made records (the runs themselves are `make bench-quick`)."""

import pytest

from benchmarks.bench import _cell, ratios, summarize, table


def _record():
    t0 = 1000.0
    return {
        "method": "m",
        "t0": t0,
        "t_end": t0 + 100,
        "trials": [
            {"trial": 0, "last_step": 120, "train_s": 30, "eval_s": 20, "wall_s": 60, "first_step_at": t0 + 4},
            {"trial": 1, "last_step": 40, "train_s": 10, "eval_s": 5, "wall_s": 20, "first_step_at": t0 + 6},
        ],
        # (time, trial, step, val_acc)
        "evals": [
            (t0 + 10, 0, 20, 0.56),
            (t0 + 12, 1, 20, 0.56),
            (t0 + 20, 0, 40, 0.70),
            (t0 + 22, 1, 40, 0.60),
            (t0 + 30, 0, 60, 0.84),
            (t0 + 50, 0, 120, 0.86),
        ],
    }


def test_summarize_reads_the_task_metrics_off_one_record():
    s = summarize(_record())
    assert s["wall_s"] == 100
    assert s["steps"] == 160
    assert s["stopped_early"] == 1
    assert s["max_eval_acc"] == 0.86
    assert s["time_to_target_s"] == 30  # the first evaluation at >= 0.83
    assert s["steps_to_target"] == 60 + 40  # trial 0 at 60, trial 1 at its last evaluation (40)
    assert s["train_share"] == pytest.approx(40 / 80)
    assert s["eval_share"] == pytest.approx(25 / 80)
    assert s["other_share"] == pytest.approx(15 / 80)
    assert s["first_step_s"] == 4


def test_shares_count_only_trials_that_returned_their_timings():
    r = _record()
    r["trials"].append({"trial": 2, "last_step": 20, "train_s": 0.0, "eval_s": 0.0, "wall_s": 15})  # pruned by Ray
    s = summarize(r)
    assert s["steps"] == 180 and s["stopped_early"] == 2
    assert s["other_share"] == pytest.approx(15 / 80)


def test_a_sweep_that_never_reaches_the_target_says_so():
    r = _record()
    r["evals"] = [(t, trial, step, min(acc, 0.8)) for t, trial, step, acc in r["evals"]]
    s = summarize(r)
    assert s["time_to_target_s"] is None and s["steps_to_target"] is None


def test_cells_are_median_and_range_and_ratios_compare_with_the_fastest_baseline():
    assert _cell([3, 1, 2], "{:.0f}") == "2 (1–3)"
    assert _cell([None, None], "{:.0f}") == "–"
    assert _cell([5, 5], "{:.1f}") == "5.0"
    runs = (
        [{"method": "finetune-sweep", "wall_s": w, "cpu_s": 2 * w, "best_val": 0.84} for w in (40, 50, 60)]
        + [{"method": "hf-trainer", "wall_s": w, "cpu_s": 2 * w, "best_val": 0.83} for w in (100, 110, 120)]
        + [{"method": "random", "wall_s": w, "cpu_s": 2 * w, "best_val": 0.83} for w in (200, 210, 220)]
    )
    for i, r in enumerate(runs):
        r["seed"] = i % 3
    for r in runs:
        r |= {"steps": 1000, "test_acc": 0.8, "peak_gib": 2.0, "first_step_s": 12.0 if r["method"] == "random" else 9.0}
        r["start_cpu_s"] = 2 * r["first_step_s"]
    variant = {"wall_s": 80, "cpu_s": 160, "best_val": 0.84, "steps": 1500, "test_acc": 0.79, "peak_gib": 2.0}
    variant |= {"first_step_s": 14.0, "start_cpu_s": 27.0}
    runs.append({"method": "finetune-sweep/fp32", "seed": 2, **variant})  # one seed: paired with ours on it
    lines = ratios(runs)
    # the variant (finetune-sweep with a speed-up taken back) is not a baseline
    assert lines[0].startswith("- finetune-sweep / fastest baseline (hf-trainer): wall 0.45x, CPU-s 0.45x")
    assert "finetune-sweep 0.840, best baseline 0.830" in lines[1]
    assert lines[2] == (
        "- median start -> first step: finetune-sweep 9.0 s, 18 CPU-s (target <= 10 s), hf-trainer 9.0 s, 18 CPU-s, "
        "random 12.0 s, 24 CPU-s"
    )
    assert lines[3] == (
        "- finetune-sweep/fp32 -> finetune-sweep (seeds [2]): peak 2.00 -> 2.00 GiB, wall 80 -> 60 s (0.75x), "
        "CPU-s 160 -> 120, steps 1500 -> 1000, best val 0.840 -> 0.840, test 0.790 -> 0.800, "
        "start -> step 14.0 -> 9.0 s (27 -> 18 CPU-s)"
    )
    text = table(runs, ["finetune-sweep", "random", "hf-trainer"])
    assert text.splitlines()[2].startswith("| finetune-sweep | 3 | 50 (40–60) |")
    assert [ln.split("|")[1].strip() for ln in text.splitlines()[2:]] == ["finetune-sweep", "random", "hf-trainer"]


def test_a_variant_that_takes_back_another_variants_speed_up_is_compared_with_that_variant(monkeypatch):
    from benchmarks import bench

    # a variant that takes a speed-up back from another variant (here a made-up pair)
    monkeypatch.setitem(bench.COMPARED_WITH, "finetune-sweep/split-in-workers", "finetune-sweep/own-split")
    monkeypatch.setitem(bench.VARIANTS, "finetune-sweep/split-in-workers", [])
    base = {"steps": 40, "best_val": 0.56, "test_acc": 0.48, "peak_gib": 2.0, "cpu_s": 30.0}
    runs = [
        {"method": "finetune-sweep", "seed": 0, "wall_s": 20, "first_step_s": 10.0, "start_cpu_s": 18.0},
        {"method": "finetune-sweep/own-split", "seed": 0, "wall_s": 21, "first_step_s": 10.5, "start_cpu_s": 19.0},
        {
            "method": "finetune-sweep/split-in-workers",
            "seed": 0,
            "wall_s": 22,
            "first_step_s": 12.0,
            "start_cpu_s": 22.0,
        },
    ]
    lines = ratios([base | r for r in runs])
    assert [ln.split(" (seeds")[0] for ln in lines] == [
        "- finetune-sweep/own-split -> finetune-sweep",
        "- finetune-sweep/split-in-workers -> finetune-sweep/own-split",
    ]
    assert lines[1].endswith("start -> step 12.0 -> 10.5 s (22 -> 19 CPU-s)")


def test_a_variants_files_are_named_without_its_slash_and_keep_the_monitors_numbers(tmp_path, monkeypatch):
    """run_one with a variant (finetune-sweep/fp32): the method process (here a stand-in that writes the
    record) gets a plain file path, and the record on disk gains the monitor's numbers."""
    import json
    import subprocess
    import sys

    from benchmarks import bench

    record = {**_record(), "method": "finetune-sweep/fp32", "best_val": 0.84, "test_acc": 0.8}
    real_popen = subprocess.Popen

    def fake(cmd, **kwargs):
        out = cmd[-1]
        code = f"import json, pathlib; pathlib.Path({out!r}).write_text({json.dumps(record)!r})"
        return real_popen([sys.executable, "-c", code], **kwargs)

    monkeypatch.setattr(bench.subprocess, "Popen", fake)
    r = bench.run_one("finetune-sweep/fp32", 0, "quick", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune-sweep_fp32-0.json", "finetune-sweep_fp32-0.log"]
    saved = json.loads((tmp_path / "finetune-sweep_fp32-0.json").read_text())
    assert saved["steps"] == r["steps"] == 160 and "cpu_s" in saved and "peak_gib" in saved


def test_a_variant_that_takes_back_an_environment_setting_runs_with_it(tmp_path, monkeypatch):
    """finetune-sweep/onednn-1024: the method process gets oneDNN's default cache size; others do not."""
    import json
    import subprocess
    import sys

    from benchmarks import bench

    record = {**_record(), "best_val": 0.84, "test_acc": 0.8}
    real_popen = subprocess.Popen

    def fake(cmd, **kwargs):
        code = (
            f"import json, os, pathlib; r = json.loads({json.dumps(record)!r}); "
            "r['note'] = os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY', 'unset'); "
            f"pathlib.Path({cmd[-1]!r}).write_text(json.dumps(r))"
        )
        return real_popen([sys.executable, "-c", code], **kwargs)

    monkeypatch.setattr(bench.subprocess, "Popen", fake)
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert bench.run_one("finetune-sweep/onednn-1024", 0, "quick", tmp_path)["note"] == "1024"
    assert bench.run_one("finetune-sweep", 0, "quick", tmp_path)["note"] == "unset"


def test_variant_seeds_run_the_variants_on_those_seeds_only(tmp_path, monkeypatch):
    from benchmarks import bench

    ran = []

    def fake_run_one(method, seed, size, out_dir):
        ran.append((method, seed))
        return {
            "method": method, "seed": seed, "wall_s": 10, "steps": 100, "cpu_s": 20, "peak_gib": 1.0,
            "best_val": 0.84, "test_acc": 0.8, "foreign_cpu_share": 0.0,
        }  # fmt: skip

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.main(["--size", "quick", "--seeds", "0", "1", "--all", "--variant-seeds", "0"])
    variants = [(m, s) for m, s in ran if m in bench.VARIANTS]
    assert variants and {s for _, s in variants} == {0}
    assert {s for m, s in ran if m == "finetune-sweep"} == {0, 1}
    summary = next(tmp_path.glob("quick-*/summary.json")).read_text()
    assert "(seeds [0])" in summary


def test_the_cpu_between_two_moments_is_interpolated_between_the_monitors_samples():
    """start_cpu_s: the tree's CPU-s from the sweep's start to its first step, which fall between samples."""
    import os

    from benchmarks import bench

    monitor = bench.Monitor(os.getpid())
    # (time, tree CPU-s, PSS, machine busy, RSS, own CPU-s): 2 cores busy from t=100 to t=101, then 1
    monitor.samples = [(100.0, 10.0, None, 0, 0, 0), (100.5, 11.0, None, 0, 0, 0), (101.0, 12.0, None, 0, 0, 0)]
    monitor.samples.append((101.5, 12.5, None, 0, 0, 0))
    assert monitor.cpu_between(100.25, 101.25) == pytest.approx(1.75)
    assert monitor.cpu_between(100.5, 101.0) == pytest.approx(1.0)
    assert monitor.cpu_between(99.0, 102.0) == pytest.approx(2.5)  # beyond the samples: their ends


def test_the_starts_cpu_is_split_by_process_and_grouped_into_parts():
    """start_cpu_by_process: each role's CPU-s over whole samples around the window (a process that
    started inside it counts from zero); start_cpu_lines: medians by part, tiny parts left out."""
    import os

    from benchmarks import bench

    monitor = bench.Monitor(os.getpid())
    assert monitor.cpu_by_process(100.0, 101.0) == []  # nothing sampled
    monitor.labels = {1: "-m benchmarks.methods", 2: "ray::ImplicitFunc.train", 3: "ray::ImplicitFunc", 4: "gcs_server"}
    monitor.per_pid = [
        (100.0, {1: 2.0, 4: 0.1}),
        (100.5, {1: 2.5, 4: 0.11, 2: 0.4}),
        (101.0, {1: 2.75, 4: 0.12, 2: 0.9, 3: 0.5}),
        (101.5, {1: 3.0, 4: 0.2, 2: 1.4, 3: 1.0}),
    ]
    assert monitor.cpu_by_process(100.2, 100.9) == [
        ("ray::ImplicitFunc.train", 0.9),
        ("-m benchmarks.methods", 0.75),
        ("ray::ImplicitFunc", 0.5),
    ]  # the samples at 100.0 and 101.0; gcs_server's 0.02 CPU-s is left out

    runs = [
        {"method": "finetune-sweep", "start_cpu_by_process": [
            ("ray::ImplicitFunc.train", 6.0), ("ray::ImplicitFunc", 5.0), ("-m benchmarks.methods", 2.0),
            ("dashboard.py --host=127.0.0.1", 1.0), ("-B -c", 1.0), ("ray-dashboard-NodeHead-0", 0.2),
            ("-c import gc; gc.disable(); from sweep.run.preflight import _pr", 0.8), ("-u log_monitor.py", 0.5),
        ]},
        {"method": "finetune-sweep", "start_cpu_by_process": [
            ("ray::ImplicitFunc.train", 7.0), ("-m benchmarks.methods", 3.0), ("dashboard.py --host=127.0.0.1", 1.2),
        ]},
        {"method": "hf-trainer", "start_cpu_by_process": [("-m benchmarks.methods", 0.7), ("raylet", 0.04)]},
        {"method": "plain", "start_cpu_by_process": [("ray::IDLE", 0.8), ("ray::RuntimeEnvAgent", 0.5), ("x", 0.3)]},
        {"method": "ray-asha"},  # no first step: no split
    ]  # fmt: skip
    assert bench.start_cpu_lines(runs) == [
        "- start -> first step, CPU-s by part (finetune-sweep, medians): trial workers 9.0, driver 2.5, "
        "Ray's dashboard 1.7, data check 0.4, Ray's other daemons 0.2",
        "- start -> first step, CPU-s by part (hf-trainer, medians): driver 0.7",
        "- start -> first step, CPU-s by part (plain, medians): Ray's idle workers 0.8, Ray's other daemons 0.5, other 0.3",
    ]


def test_the_monitor_counts_memory_that_forked_processes_share_once(tmp_path):
    """A parent fills 300 MB and forks three children that only read it: summed RSS counts it four
    times, the summed PSS (the tree's peak) about once."""
    import subprocess
    import sys
    import time

    from benchmarks import bench

    code = (
        "import os, time\n"
        "buf = bytearray(300 * 2**20)\n"
        "for i in range(0, len(buf), 4096): buf[i] = 1\n"
        "kids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        sum(buf[::4096]); time.sleep(4); os._exit(0)\n"
        "    kids.append(pid)\n"
        f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
        "for pid in kids: os.waitpid(pid, 0)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    monitor = bench.Monitor(proc.pid)
    monitor.start()
    proc.wait()
    monitor.stop.set()
    monitor.join()
    assert (tmp_path / "ready").exists()
    got = monitor.window(0, time.time() + 10)
    assert 4 * 0.28 < got["peak_rss_sum_gib"] < 4 * 0.33  # four processes, each maps the 300 MB
    assert 0.28 < got["peak_gib"] < 0.4  # held once
    names = [name for name, _, _ in got["at_peak_mb"]]
    assert len(names) == 4


def test_the_gpu_packing_sweep_is_the_sst2_spec_with_k_trials_sharing_one_gpu_and_no_pruner(tmp_path):
    """benchmarks/gpu_packing.py: k trials at a time take 1/k of a GPU each; every trial runs its steps
    (no pruner), on the given data and model, with the shipped spec's space and sampler."""
    import argparse

    from benchmarks.gpu_packing import spec_for

    args = argparse.Namespace(data=tmp_path / "data", model=tmp_path / "model", trials=16, steps=120)
    spec = spec_for(4, args, tmp_path)
    assert spec.resources.gpus_per_trial == 0.25
    assert spec.budget.max_concurrent_trials == 4 and spec.budget.num_trials == 16
    assert spec.pruner.kind == "none"
    assert spec.trial_template()["data"]["path"] == str(tmp_path / "data" / "train.tsv")
    assert spec.trial_template()["model"]["name_or_path"] == str(tmp_path / "model")
    assert set(spec.space) >= {"optim.learning_rate", "model.num_layers", "loss.name", "adaptation.r"}
    assert spec.sampler.kind == "tpe" and not spec.execution.dashboard


def test_the_latest_table_goes_between_the_performance_pages_markers(tmp_path):
    """`make bench` (--docs) replaces docs/performance.md's latest table and keeps the rest of the page."""
    from benchmarks import bench

    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nhow\n\n{bench.TABLE_START}\nold table\n{bench.TABLE_END}\n\n## History\n")
    bench.update_docs("new table", page)
    assert (
        page.read_text() == f"# Performance\n\nhow\n\n{bench.TABLE_START}\nnew table\n{bench.TABLE_END}\n\n## History\n"
    )
    page.write_text("# Performance\n")
    with pytest.raises(ValueError, match="add them where the latest table goes"):
        bench.update_docs("new table", page)
    assert bench.PERFORMANCE_PAGE.relative_to(bench.REPO).as_posix() == "docs/performance.md"
