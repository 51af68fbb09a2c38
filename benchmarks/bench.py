"""`make bench` / `make bench-quick`: finetune-sweep and three baselines on the benchmark task
(../shared/bench/TASK.md), each with several seeds, one after another in one run on this machine.

Each (method, seed) runs in a fresh process (`benchmarks/methods.py`); this process samples that
process tree every 0.5 s (memory; CPU time, kept for processes that have ended) and the machine's
busy CPU (/proc/stat), and reads the sweep clock (t0, t_end) the method wrote. Memory is the tree's
summed PSS (each shared page split among the processes that map it: the memory the tree holds); the
summed RSS is kept beside it, but counts a shared page once per process (Ray's dashboard forks nine
modules from one forkserver: ~90 MB RSS each, ~20 MB PSS). Reported per method:
median and range over seeds. Only ratios within one run mean anything: machines here differ by 1.6x
from day to day. A run whose foreign CPU share is high is flagged, not compared.

    python -m benchmarks.bench --size quick --seeds 0 1 2 [--methods finetune-sweep ray-asha]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.methods import COMPARED_WITH, METHODS, VARIANT_ENV, VARIANTS
from benchmarks.task import SIZES, TARGET_ACC

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PSS_EVERY = 4  # read PSS every 4th sample (2 s), RSS every sample
BUSY_LIMIT = 0.05  # foreign CPU share above which timings are not compared
PERFORMANCE_PAGE = REPO / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench:start -->", "<!-- bench:end -->"


def _machine_busy() -> float:
    """Busy CPU-seconds of the whole machine so far (all cores)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _pss(pid: int) -> int | None:
    """Proportional set size in bytes (Linux: /proc/PID/smaps_rollup), or None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _label(p: psutil.Process) -> str:
    """A process's role: Ray names its workers and dashboard modules in argv[0] (ray::..., ray-dashboard-...)."""
    cmd = p.cmdline()
    first = Path(cmd[0]).name if cmd else p.name()
    if first.startswith("python") and len(cmd) > 1:
        first = " ".join(Path(c).name for c in cmd[1:3])
    return first.split(" (")[0][:60]


class Monitor(threading.Thread):
    """Samples one process tree's CPU time and memory, the machine's busy CPU and its own CPU (the
    monitor's reads are not foreign load)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.cpu: dict[int, float] = {}  # last CPU time seen per pid (ended processes keep theirs)
        self.labels: dict[int, str] = {}  # each pid's role (_label) when last seen
        self.per_pid: list[tuple[float, dict[int, float]]] = []  # (time, CPU-s per pid) at each sample
        # (time, tree CPU-s, tree PSS bytes or None, machine busy CPU-s, tree RSS bytes, own CPU-s)
        self.samples: list[tuple[float, float, int | None, float, int, float]] = []
        # (process, PSS bytes, RSS bytes) in the sample with the largest summed PSS
        self.at_peak: list[tuple[str, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            # PSS costs ~10 ms a process (the kernel walks its page tables): every PSS_EVERY-th sample
            with_pss = n % PSS_EVERY == 0
            n += 1
            each: list[tuple[str, int, int]] = []
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
                        self.labels[p.pid] = _label(p)  # the last seen: a Ray worker renames itself
                        rss = p.memory_info().rss
                        pss = _pss(p.pid) if with_pss else None
                        each.append((self.labels[p.pid], rss if pss is None else pss, rss))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            rss_sum = sum(e[2] for e in each)
            pss_sum = sum(e[1] for e in each) if with_pss else None
            if pss_sum is not None and pss_sum > sum(e[1] for e in self.at_peak):
                self.at_peak = sorted(each, key=lambda e: -e[1])
            now = time.time()
            self.samples.append((now, sum(self.cpu.values()), pss_sum, _machine_busy(), rss_sum, time.process_time()))
            self.per_pid.append((now, dict(self.cpu)))
            self.stop.wait(0.5)

    def _around(self, t: float, rows: list[Any] | None = None) -> tuple[Any, Any]:
        """The last sample (of ``rows``, default ``samples``; time first) at or before ``t`` and the first at
        or after it (the ends beyond the samples)."""
        rows = self.samples if rows is None else rows
        before = max((s for s in rows if s[0] <= t), key=lambda s: s[0], default=rows[0])
        after = min((s for s in rows if s[0] >= t), key=lambda s: s[0], default=rows[-1])
        return before, after

    def cpu_between(self, t0: float, t1: float) -> float:
        """The tree's CPU-s from t0 to t1, interpolated between samples (a process that ends between two
        samples keeps what the last one saw)."""

        def at(t: float) -> float:
            before, after = self._around(t)
            if after[0] <= before[0]:
                return float(before[1])
            return float(before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0]))

        return at(t1) - at(t0)

    def cpu_by_process(self, t0: float, t1: float) -> list[tuple[str, float]]:
        """Each role's CPU-s from the last sample at or before t0 to the first at or after t1 (whole
        samples, 0.5 s apart), largest first: where the start's CPU goes."""
        if not self.per_pid:
            return []
        before, after = self._around(t0, self.per_pid)[0][1], self._around(t1, self.per_pid)[1][1]
        by_role: dict[str, float] = {}
        for pid, cpu in after.items():
            role = self.labels.get(pid, str(pid))
            by_role[role] = by_role.get(role, 0.0) + cpu - before.get(pid, 0.0)
        return sorted(((role, round(cpu, 2)) for role, cpu in by_role.items() if cpu >= 0.05), key=lambda e: -e[1])

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        before, after = self._around(t0)[0], self._around(t1)[1]
        own = after[1] - before[1]
        machine = after[3] - before[3]
        monitor = after[5] - before[5]
        wall = max(after[0] - before[0], 1e-9)
        pss = [s[2] for s in inside if s[2] is not None] or [s[2] for s in self.samples if s[2] is not None]
        return {
            "cpu_s": own,
            "peak_gib": max(pss) / 2**30,
            "peak_rss_sum_gib": max(s[4] for s in inside) / 2**30,
            "foreign_cpu_share": max(0.0, machine - own - monitor) / (os.cpu_count() or 1) / wall,
            "monitor_cpu_share": monitor / (os.cpu_count() or 1) / wall,
            # (process, PSS MB, RSS MB) at the PSS peak
            "at_peak_mb": [(name, round(pss / 2**20), round(rss / 2**20)) for name, pss, rss in self.at_peak],
        }


def run_one(method: str, seed: int, size: str, out_dir: Path) -> dict[str, Any]:
    stem = f"{method.replace('/', '_')}-{seed}"  # a variant's name has a slash
    out = out_dir / f"{stem}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), **VARIANT_ENV.get(method, {})}
    log = (out_dir / f"{stem}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.methods", method, str(seed), size, str(out)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    monitor = Monitor(proc.pid)
    monitor.start()
    rc = proc.wait()
    monitor.stop.set()
    monitor.join()
    log.close()
    if rc != 0 or not out.is_file():
        tail = (out_dir / f"{stem}.log").read_text()[-3000:]
        raise SystemExit(f"{method} seed {seed} failed (exit {rc}):\n{tail}")
    result = json.loads(out.read_text())
    summary = summarize(result)
    measured = {**result, **summary, **monitor.window(result["t0"], result["t_end"])}
    if summary["first_step_s"] is not None:  # what the start needs of the 2 cores
        measured["start_cpu_s"] = monitor.cpu_between(result["t0"], result["t0"] + summary["first_step_s"])
        measured["start_cpu_by_process"] = monitor.cpu_by_process(result["t0"], result["t0"] + summary["first_step_s"])
    out.write_text(json.dumps(measured))  # with the monitor's numbers: a later failure loses nothing
    return measured


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    """The task's metrics from one method's record."""
    t0, wall = r["t0"], r["t_end"] - r["t0"]
    trials = r["trials"]
    steps = sum(t["last_step"] or 0 for t in trials)
    evals = sorted(r["evals"])
    reached = next(((t, trial, step) for t, trial, step, acc in evals if acc >= TARGET_ACC), None)
    steps_to = None
    if reached is not None:  # optimizer steps all trials had done by then (each at its last evaluation)
        last: dict[int, int] = {}
        for t, trial, step, _ in evals:
            if t <= reached[0]:
                last[trial] = max(last.get(trial, 0), step)
        steps_to = sum(last.values())
    # shares over the trials that returned their timings (a trial Ray stops when pruned returns none)
    timed = [t for t in trials if t.get("train_s")]
    trial_wall = sum(t["wall_s"] or 0 for t in timed)
    train = sum(t["train_s"] for t in timed)
    evaluation = sum(t["eval_s"] or 0 for t in timed)
    firsts = [t["first_step_at"] for t in trials if t.get("first_step_at")]
    return {
        "wall_s": wall,
        "steps": steps,
        "stopped_early": sum(1 for t in trials if (t["last_step"] or 0) < max((x["last_step"] or 0) for x in trials)),
        "max_eval_acc": max((acc for *_, acc in evals), default=None),
        "time_to_target_s": reached[0] - t0 if reached else None,
        "steps_to_target": steps_to,
        "train_share": train / trial_wall if trial_wall else None,
        "eval_share": evaluation / trial_wall if trial_wall else None,
        "other_share": 1 - (train + evaluation) / trial_wall if trial_wall else None,
        "first_step_s": min(firsts) - t0 if firsts else None,
    }


COLUMNS = [
    ("wall_s", "wall s", "{:.0f}"),
    ("steps", "steps", "{:.0f}"),
    ("cpu_s", "CPU-s", "{:.0f}"),
    ("peak_gib", "peak GiB", "{:.2f}"),
    ("peak_rss_sum_gib", "RSS-sum GiB", "{:.2f}"),
    ("best_val", "best val", "{:.3f}"),
    ("test_acc", "test", "{:.3f}"),
    ("time_to_target_s", f"s to {TARGET_ACC}", "{:.0f}"),
    ("steps_to_target", f"steps to {TARGET_ACC}", "{:.0f}"),
    ("eval_share", "eval share", "{:.0%}"),
    ("other_share", "other share", "{:.0%}"),
    ("first_step_s", "start→step s", "{:.1f}"),
    ("start_cpu_s", "CPU-s to step", "{:.0f}"),
]


def _cell(values: list[Any], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(runs: list[dict[str, Any]], methods: list[str]) -> str:
    head = "| method | seeds | " + " | ".join(name for _, name, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        if not mine:
            continue
        cells = [_cell([r.get(key) for r in mine], fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {m} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(runs: list[dict[str, Any]]) -> list[str]:
    """Our median wall and CPU against the fastest baseline's, and each speed-up's before/after (a
    variant that takes it back), all measured in this run."""
    keys = ("wall_s", "cpu_s", "peak_gib", "best_val", "test_acc", "steps", "first_step_s", "start_cpu_s")

    def median(method: str, key: str, seeds: set[int] | None = None) -> float:
        values = [
            r[key]
            for r in runs
            if r["method"] == method and r.get(key) is not None and (seeds is None or r["seed"] in seeds)
        ]
        return statistics.median(values) if values else float("nan")

    med = {m: {k: median(m, k) for k in keys} for m in {r["method"] for r in runs}}
    ours = med.get("finetune-sweep")
    baselines = {m: v for m, v in med.items() if not m.startswith("finetune-sweep")}
    lines = []
    if ours and baselines:
        fastest = min(baselines, key=lambda m: baselines[m]["wall_s"])
        best_val = max(v["best_val"] for v in baselines.values())
        lines += [
            f"- finetune-sweep / fastest baseline ({fastest}): wall {ours['wall_s'] / baselines[fastest]['wall_s']:.2f}x, "
            f"CPU-s {ours['cpu_s'] / baselines[fastest]['cpu_s']:.2f}x (target <= 0.5x both)",
            f"- median best val: finetune-sweep {ours['best_val']:.3f}, best baseline {best_val:.3f}",
            f"- median start -> first step: finetune-sweep {ours['first_step_s']:.1f} s, {ours['start_cpu_s']:.0f} "
            "CPU-s (target <= 10 s), "
            + ", ".join(
                f"{m} {v['first_step_s']:.1f} s, {v['start_cpu_s']:.0f} CPU-s" for m, v in sorted(baselines.items())
            ),
        ]
    for name, before in sorted(med.items()):
        against = COMPARED_WITH.get(name, "finetune-sweep")
        if name in VARIANTS and against in med:
            # against finetune-sweep (or the variant it takes a speed-up back from) on the variant's seeds
            # only: the same sampled trials, paired
            seeds = {r["seed"] for r in runs if r["method"] == name}
            after = {k: median(against, k, seeds) for k in keys}
            lines.append(
                f"- {name} -> {against} (seeds {sorted(seeds)}): peak {before['peak_gib']:.2f} -> {after['peak_gib']:.2f} GiB, wall {before['wall_s']:.0f} -> {after['wall_s']:.0f} s "
                f"({after['wall_s'] / before['wall_s']:.2f}x), CPU-s {before['cpu_s']:.0f} -> {after['cpu_s']:.0f}, "
                f"steps {before['steps']:.0f} -> {after['steps']:.0f}, best val {before['best_val']:.3f} -> "
                f"{after['best_val']:.3f}, test {before['test_acc']:.3f} -> {after['test_acc']:.3f}, "
                f"start -> step {before['first_step_s']:.1f} -> {after['first_step_s']:.1f} s "
                f"({before['start_cpu_s']:.0f} -> {after['start_cpu_s']:.0f} CPU-s)"
            )
    return lines


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"


def update_docs(text: str, page: Path = PERFORMANCE_PAGE) -> None:
    """Put ``text`` between the page's table markers, in place of the table there (docs/performance.md)."""
    content = page.read_text(encoding="utf-8")
    if TABLE_START not in content or TABLE_END not in content:
        raise ValueError(f"{page}: no {TABLE_START} ... {TABLE_END} lines; add them where the latest table goes")
    head, rest = content.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    page.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{tail}", encoding="utf-8")


# a process's role (``_label``) -> its part of the start, in ``start_cpu_lines``
START_PARTS = (
    ("ray::ImplicitFunc", "trial workers"),  # Ray's worker boot, then the trial's imports, data and model
    ("ray::DashboardAgent", "Ray's dashboard agent"),
    ("dashboard.py", "Ray's dashboard"),
    ("ray-dashboard-", "Ray's dashboard"),  # its modules, forked by ...
    ("-B -c", "Ray's dashboard"),  # ... its multiprocessing forkserver
    ("-m benchmarks.methods", "driver"),  # the sweep's own process (or the plain script's)
    ("-c import gc", "data check"),  # finetune-sweep's preflight child
    ("ray::IDLE", "Ray's idle workers"),  # prestarted for the driver (the plain script's Ray): no trial's
    ("ray::RuntimeEnv", "Ray's other daemons"),  # (its agent, seen also as it renames itself)
    ("monitor.py", "Ray's other daemons"),  # the autoscaler's monitor and the log monitor
    ("gcs_server", "Ray's other daemons"),
    ("raylet", "Ray's other daemons"),
)


def start_cpu_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Where each method's start goes: the medians over seeds of each part's CPU-s from the sweep's
    start to its first training step (the processes the monitor saw, grouped by START_PARTS)."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in runs):
        per_seed: list[dict[str, float]] = []
        for r in runs:
            if r["method"] != method or not r.get("start_cpu_by_process"):
                continue
            parts: dict[str, float] = {}
            for role, cpu in r["start_cpu_by_process"]:
                part = next((name for key, name in START_PARTS if key in role), "other")
                parts[part] = parts.get(part, 0.0) + cpu
            per_seed.append(parts)
        if not per_seed:
            continue
        names = {name for parts in per_seed for name in parts}
        medians = {name: statistics.median(parts.get(name, 0.0) for parts in per_seed) for name in names}
        shown = ", ".join(
            f"{name} {cpu:.1f}" for name, cpu in sorted(medians.items(), key=lambda e: -e[1]) if cpu >= 0.05
        )
        lines.append(f"- start -> first step, CPU-s by part ({method}, medians): {shown}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS + list(VARIANTS),
        default=METHODS,
        help=f"also: {', '.join(VARIANTS)} (finetune-sweep with one speed-up taken back: before/after)",
    )
    parser.add_argument("--all", action="store_true", help="every method and every variant")
    parser.add_argument(
        "--variant-seeds",
        type=int,
        nargs="+",
        help="run the variants on these seeds only (default: every seed); each is compared with "
        "finetune-sweep on the same seeds",
    )
    parser.add_argument("--docs", action="store_true", help="write the table into docs/performance.md (its latest run)")
    args = parser.parse_args(argv)
    if args.all:
        args.methods = METHODS + list(VARIANTS)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / f"{args.size}-{stamp}"
    out_dir.mkdir(parents=True)
    runs = []
    for seed in args.seeds:  # seeds outer: a slow period of the machine hits every method alike
        for method in args.methods:
            if method in VARIANTS and args.variant_seeds is not None and seed not in args.variant_seeds:
                continue
            started = time.time()
            r = run_one(method, seed, args.size, out_dir)
            runs.append(r)
            flag = "  BUSY: not comparable" if r["foreign_cpu_share"] > BUSY_LIMIT else ""
            print(
                f"{method:<15} seed {seed}: wall {r['wall_s']:.0f}s, {r['steps']} steps, CPU {r['cpu_s']:.0f}s, "
                f"peak {r['peak_gib']:.2f} GiB, val {r['best_val']:.3f}, test {r['test_acc']:.3f}, "
                f"foreign CPU {r['foreign_cpu_share']:.1%} ({time.time() - started:.0f}s in all){flag}",
                flush=True,
            )
    busy = [f"{r['method']} seed {r['seed']}" for r in runs if r["foreign_cpu_share"] > BUSY_LIMIT]
    header = f"{args.size} benchmark, {datetime.now(UTC):%Y-%m-%d}, {machine()}; seeds {args.seeds}"
    if args.variant_seeds is not None and set(args.methods) & set(VARIANTS):
        header += f" (variants: {args.variant_seeds})"
    header += "; median (min–max)"
    notes = sorted({f"- {r['method']}: {r['note']}" for r in runs if r.get("note")})
    text = "\n".join(
        [header, "", table(runs, args.methods), "", *ratios(runs), *start_cpu_lines(runs), *notes]
        + (
            [f"- BUSY machine during: {', '.join(busy)} (foreign CPU > {BUSY_LIMIT:.0%}): timings not comparable"]
            if busy
            else []
        )
    )
    print()
    print(text)
    for r in runs:
        r.pop("evals", None)  # the summary JSON keeps the metrics; per-eval records stay in the method files
    (out_dir / "summary.json").write_text(json.dumps({"header": header, "runs": runs, "table": text}, indent=1))
    (out_dir / "summary.md").write_text(text + "\n")
    print(f"\nresults: {out_dir}")
    if args.docs:
        try:
            update_docs(text)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
