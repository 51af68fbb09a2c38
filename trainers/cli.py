"""``python -m trainers run CONFIG.yaml [key=value ...] [--json]``: one trial, no sweep."""

from __future__ import annotations

import argparse
import os
import sys

from trainers.config import load_trial_config
from trainers.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one trial and print a line per evaluation")
    run.add_argument("config", help="trial config YAML (a sweep spec's trial section is one)")
    run.add_argument("overrides", nargs="*", help="key=value, e.g. optim.learning_rate=1e-4")
    run.add_argument("--json", action="store_true", help="print the outcome as JSON on the last line")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = load_trial_config(args.config, args.overrides)
        from trainers.api import RecordingReporter
        from trainers.loop import run_trial

        outcome = run_trial(cfg, RecordingReporter(echo=True))
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    t = outcome.timings
    best = outcome.best_metrics.get(cfg.eval.metric)
    print(
        f"{outcome.status}: {outcome.num_steps} steps, best {cfg.eval.metric}="
        f"{best if best is None else f'{best:.4g}'} at step {outcome.best_step}; "
        f"load {t.load_s:.2f}s tokenize {t.tokenize_s:.2f}s train {t.train_s:.2f}s eval {t.eval_s:.2f}s; "
        f"peak RSS {outcome.peak_rss_mb:.0f} MB",
        flush=True,
    )
    if outcome.status == "diverged":
        print(f"diverged at step {outcome.diverged_step} (lr {outcome.diverged_learning_rate:.3g})")
    if args.json:
        print(outcome.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
