"""`sweep validate|run|next|resume|report|history|evaluate|predict|dashboard|submit|status|logs|stop|cluster`. Heavy imports
happen inside commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from sweep.credentials import mask
from sweep.errors import SpecError, SweepError
from sweep.spec import load_spec
from trainers.errors import ConfigError

EXIT_USER_ERROR = 2


def _env_defaults() -> None:
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        os.environ.setdefault(key, value)


def _validate(args: argparse.Namespace) -> int:
    from sweep.run.plan import preflight
    from sweep.warm_start import previous_sweep

    spec = load_spec(args.spec, args.overrides)
    previous = previous_sweep(spec)  # its run dir readable, its objective this one's
    plan = preflight(spec)
    fingerprints = plan.fingerprints
    num_confirm = spec.verdict.num_confirm(spec.budget.num_trials) if spec.execution.verdict else 0
    confirm = f" ({num_confirm} of them confirmations)" if num_confirm else ""
    print(
        f"{args.spec}: OK — sweep '{spec.name}', {len(spec.space)} parameters, {spec.budget.num_trials} trials"
        f"{confirm}, "
        f"sampler {spec.sampler.kind}, pruner {spec.pruner.kind}; data {fingerprints['data']}, "
        f"split {fingerprints['split']}"
    )
    for line in plan.data_lines:
        print(line)
    if previous is not None:
        print(f"warm start: from {previous.run_dir} (its trials inside this space start the study)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from sweep.run import run_sweep
    from sweep.summary import print_summary

    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"execution.address={args.address}")
    spec = load_spec(args.spec, overrides)
    result = run_sweep(spec)
    print_summary(spec, result)
    return 130 if result.interrupted else 0


def _next(args: argparse.Namespace) -> int:
    from sweep.history import next_spec

    args.spec = next_spec(args.run_dir)
    return _run(args)


def _resume(args: argparse.Namespace) -> int:
    from sweep.run import resume_sweep
    from sweep.summary import print_summary

    spec, result = resume_sweep(Path(args.run_dir), args.overrides)
    print_summary(spec, result)
    return 130 if result.interrupted else 0


def _evaluate(args: argparse.Namespace) -> int:
    from sweep.chosen_model import evaluate

    done = evaluate(args.run_dir, args.file, args.tracking_uri)
    print(f"{args.file}: {done.num_rows} rows")
    for key, value in done.metrics.items():
        print(f"  {key:<16} {value:.4f}")
    if done.recorded_as:
        print(f"recorded on the sweep's MLflow run as {done.recorded_as}*")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sweep.chosen_model import predict

    out = Path(args.out or f"{Path(args.file).stem}.predictions.csv")
    with tqdm(unit="row", desc="predict", disable=None) as bar:
        num_rows = predict(args.run_dir, args.file, out, on_batch=bar.update)
    print(f"{num_rows} predictions in {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from sweep.verdict import make_report

    make_report(args.target, tracking_uri=args.tracking_uri, storage=args.storage)
    return 0


def _history(args: argparse.Namespace) -> int:
    from sweep.credentials import resolve
    from sweep.history import HEADER, format_table, history_rows
    from sweep.tracking import default_tracking_uri

    uri = resolve(args.tracking_uri or default_tracking_uri(args.runs_dir), "--tracking-uri")
    for line in format_table(HEADER, history_rows(uri, args.name)):
        print(line)
    return 0


def _latest_run(runs_dir: str, name: str) -> Path:
    found = sorted(Path(runs_dir).glob(f"*/*/{name}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SpecError([f"run_dir: no sweep under '{runs_dir}/' yet; run one (make sweep) or pass its run dir"])
    return found[-1].parent


def _optuna_dashboard(args: argparse.Namespace) -> int:
    from sweep.credentials import resolve
    from sweep.optuna_dashboard import serve_dashboard
    from sweep.run.record import read_state
    from sweep.run_dir import STATE_FILE

    run_dir = Path(args.run_dir) if args.run_dir else _latest_run(args.runs_dir, STATE_FILE)
    storage = resolve(args.storage or read_state(run_dir).storage, "--storage")
    print(f"optuna-dashboard for {run_dir} on http://{args.host}:{args.port} (the study is named after the sweep)")
    print("Ctrl-C stops it.", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_dashboard(storage, args.host, args.port)
    except OSError as exc:  # the port is taken, or the host is not this machine's
        raise SpecError(
            [f"--port: cannot serve on {args.host}:{args.port} ({exc.strerror}); choose another port"]
        ) from None
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import json

    from sweep.ray.session import auth_token
    from sweep.run_dir import RAY_FILE

    latest = sorted(Path(args.runs_dir).glob(f"*/*/{RAY_FILE}"), key=lambda p: p.stat().st_mtime)
    url = json.loads(latest[-1].read_text())["dashboard"] if latest else "http://127.0.0.1:8265"
    print(f"Ray dashboard: {url}  (live only while a sweep runs)")
    token = auth_token()
    if token:
        print(f"Token authentication is on: paste this token into the dashboard's prompt:\n  {token}")
        print("CLI clients (ray job submit, ray status) also need: export RAY_AUTH_MODE=token")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from sweep.ray.jobs import submit

    submit(
        args.spec,
        args.overrides,
        args.address,
        working_dir=args.working_dir,
        installed=args.installed,
        dry_run=args.dry_run,
        max_upload_mib=args.max_upload_mib,
    )
    return 0


def _job_status(args: argparse.Namespace) -> int:
    from sweep.ray.jobs import status

    state = status(args.job_id, args.address)
    return 0 if state in ("SUCCEEDED", "RUNNING", "PENDING") else 1


def _job_logs(args: argparse.Namespace) -> int:
    from sweep.ray.jobs import logs

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops following, not the job
        logs(args.job_id, args.address, follow=args.follow)
    return 0


def _job_stop(args: argparse.Namespace) -> int:
    from sweep.ray.jobs import stop

    state = stop(args.job_id, args.address)
    return 0 if state == "STOPPED" or state == "SUCCEEDED" else 1


def _init_storage(args: argparse.Namespace) -> int:
    from sweep.credentials import mask, resolve
    from sweep.optuna_study import create_storage

    url = resolve(args.url, "url")
    try:
        create_storage(url)
    except Exception as exc:  # the database's own error (unreachable, wrong password), in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SweepError(f"url: cannot open Optuna storage {mask(url)} ({mask(first)[:300]})") from None
    print(f"Optuna storage ready: {mask(url)}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from sweep.ray import cluster

    if args.action == "down":
        stopped = cluster.down(args.runs_dir)
        print(f"stopped: {', '.join(stopped)}" if stopped else "no cluster was running from here")
        return 0
    started = time.time()
    up = cluster.up(args.runs_dir, workers=args.workers, cpus_per_node=args.cpus, gpus_per_node=args.gpus)
    print(f"Ray cluster up in {time.time() - started:.0f}s: head + {args.workers} worker(s) on 127.0.0.1")
    print(f"  address:   {up.address}   (ray.init / ray start --address)")
    print(f"  dashboard: {up.dashboard}   (Job API; token: make dashboard)")
    print(f"  submit:    make submit   (or: sweep submit SPEC --address {up.dashboard})")
    print("  stop:      make cluster-down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sweep", description="Hyperparameter sweeps for fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("validate", "check a spec and its data; starts nothing"), ("run", "run a sweep")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("spec", help="sweep spec YAML (search_spaces/*.yaml)")
        p.add_argument("overrides", nargs="*", help="key=value, e.g. budget.num_trials=4")
        if name == "run":
            p.add_argument("--address", help="Ray cluster address (default: a local Ray in the run dir)")
    p = sub.add_parser("next", help="run the next sweep a finished sweep's verdict wrote, starting from its trials")
    p.add_argument("run_dir", help="the finished sweep's run dir (runs/NAME/TIME)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. budget.num_trials=4")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray in the run dir)")
    p = sub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("report", help="the verdict (accept / redesign), blame and next sweep of a finished sweep")
    p.add_argument("target", help="a run dir (runs/NAME/TIME) or the sweep's MLflow parent run id")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for a run id (default: $MLFLOW_TRACKING_URI or runs/)")
    p.add_argument("--storage", help="the Optuna storage URL, when the run dir has it masked (a literal password)")
    p = sub.add_parser("history", help="the sweeps of one name, oldest first, each with the one it started from")
    p.add_argument("name", help="the spec's name (its MLflow experiment)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or RUNS_DIR/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", help="where the default record is (default: runs)")
    p = sub.add_parser("evaluate", help="the chosen model's metrics on a labelled file (e.g. a held-out test set)")
    p.add_argument("run_dir", help="a finished sweep's run dir (runs/NAME/TIME), or models:/NAME@ALIAS")
    p.add_argument("file", help="csv / tsv / jsonl / parquet with the spec's columns")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ (default: $MLFLOW_TRACKING_URI or runs/)")
    p = sub.add_parser("predict", help="the chosen model's predictions for a file (labels optional)")
    p.add_argument("run_dir")
    p.add_argument("file")
    p.add_argument("--out", help="CSV to write (default: FILE_STEM.predictions.csv)")
    p = sub.add_parser("optuna-dashboard", help="serve optuna-dashboard on a sweep's study (default: the latest)")
    p.add_argument("run_dir", nargs="?", help="a run dir (default: the newest under --runs-dir)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--storage", help="the Optuna storage URL, when the run dir has it masked (a literal password)")
    p = sub.add_parser("dashboard", help="print the Ray dashboard URL and auth token")
    p.add_argument("--runs-dir", default="runs")
    p = sub.add_parser("submit", help="run a sweep as a Ray job on a cluster (checks spec and data first)")
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--address", help="the head's dashboard, http://HEAD:8265 (default: $RAY_ADDRESS or make cluster-up's)"
    )
    p.add_argument("--working-dir", default=".", help="the project directory sent with the job (default: .)")
    p.add_argument(
        "--installed",
        action="store_true",
        help="run the finetune-sweep installed on the cluster (its image); send only the spec",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded and left out; send nothing")
    p.add_argument("--max-upload-mib", type=float, help="refuse a bigger upload (default: 100)")
    for name, helptext in (
        ("status", "a submitted sweep's job status"),
        ("logs", "a submitted sweep's output"),
        ("stop", "stop a submitted sweep (its runs end KILLED; sweep resume continues it)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("job_id")
        p.add_argument("--address", help="the head's dashboard (default: $RAY_ADDRESS or make cluster-up's)")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    p = sub.add_parser("init-storage", help="create Optuna's tables in a database once, before sweeps share it")
    p.add_argument("url", help="e.g. postgresql+psycopg://sweep:${PGPASSWORD}@db:5432/optuna")
    p = sub.add_parser("cluster", help="a local Ray cluster (head + workers on 127.0.0.1) for trying jobs")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1, help="CPUs each node offers")
    p.add_argument("--gpus", type=float, default=0, help="GPUs each node declares (even on a CPU machine)")
    args = parser.parse_args(argv)
    _env_defaults()
    command = {
        "validate": _validate,
        "run": _run,
        "next": _next,
        "history": _history,
        "resume": _resume,
        "report": _report,
        "evaluate": _evaluate,
        "predict": _predict,
        "optuna-dashboard": _optuna_dashboard,
        "dashboard": _dashboard,
        "submit": _submit,
        "status": _job_status,
        "logs": _job_logs,
        "stop": _job_stop,
        "cluster": _cluster,
        "init-storage": _init_storage,
    }[args.command]
    try:
        return command(args)
    except ConfigError as exc:  # a SpecError, or a trial's own check reached through the spec
        for line in exc.problems:
            print(f"error: {mask(line)}", file=sys.stderr)  # a problem may quote the URL it is about
        return EXIT_USER_ERROR
    except SweepError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C before anything was recorded (a sweep that started says how to resume)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # our bug, or a server's error: the whole story, but never a password in it
        import traceback

        print(mask(traceback.format_exc()), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":
    sys.exit(main())
