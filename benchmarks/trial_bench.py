"""`make bench-trial`: where a trial's time and memory go, for the real MiniLM on this machine.

Each adaptation runs in its own process (peak RSS is per process) and runs two trials back to back,
so the second shows what the in-process caches (tokenized data, base weights) save.
Data: SST-2 from ../shared/data/sst2 when present (first 2000 rows), else the shipped demo data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [os.environ.get("SST2_DIR"), REPO.parent / "shared/data/sst2", "/work/shared/data/sst2"]
SST2 = next((Path(c) / "train.tsv" for c in _CANDIDATES if c and (Path(c) / "train.tsv").is_file()), Path("-"))
STEPS = int(os.environ.get("BENCH_STEPS", "30"))


def _child(method: str) -> None:
    from trainers.api import RecordingReporter
    from trainers.config import load_trial_config
    from trainers.loop import run_trial

    data = (
        [f"data.path={SST2}", "data.text_column=sentence", "data.max_rows=2000", "data.max_length=64"]
        if SST2.is_file()
        else ["data.max_length=64"]
    )
    overrides = [
        *data,
        f"adaptation.method={method}",
        f"optim.max_steps={STEPS}",
        f"eval.eval_every_steps={STEPS}",
        "optim.batch_size=16",
        "num_threads=2",
    ]
    cfg = load_trial_config(REPO / "configs" / "classify.yaml", overrides)
    for attempt in ("first", "cached"):
        out = run_trial(cfg, RecordingReporter())
        t = out.timings
        print(
            json.dumps(
                {
                    "method": method,
                    "trial": attempt,
                    "step_s": t.train_s / out.num_steps,
                    "load_s": t.load_s,
                    "tokenize_s": t.tokenize_s,
                    "eval_s": t.eval_s,
                    "peak_rss_mb": out.peak_rss_mb,
                    "trainable": out.num_trainable_params,
                    "val_accuracy": out.final_metrics["val_accuracy"],
                    "data": "sst2[:2000]" if SST2.is_file() else "demo",
                }
            ),
            flush=True,
        )


def main() -> None:
    if len(sys.argv) > 1:
        _child(sys.argv[1])
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(
        f"{'method':<6} {'trial':<7} {'step s':>7} {'load s':>7} {'tok s':>6} {'eval s':>7} "
        f"{'peak MB':>8} {'trainable':>10} {'val acc':>7}  data"
    )
    for method in ("lora", "full"):
        proc = subprocess.run([sys.executable, __file__, method], capture_output=True, text=True, env=env, check=True)
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            print(
                f"{r['method']:<6} {r['trial']:<7} {r['step_s']:>7.3f} {r['load_s']:>7.2f} {r['tokenize_s']:>6.3f} "
                f"{r['eval_s']:>7.2f} {r['peak_rss_mb']:>8.0f} {r['trainable']:>10,} {r['val_accuracy']:>7.3f}  "
                f"{r['data']}"
            )


if __name__ == "__main__":
    main()
