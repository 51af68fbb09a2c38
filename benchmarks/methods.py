"""One sweep of the benchmark task by one method, in this process: `python -m benchmarks.methods METHOD
SEED SIZE OUT.json`. The harness (bench.py) runs each in a fresh process and measures the process tree.

Every method writes the same record: ``t0``/``t_end`` (epoch seconds: the sweep clock, imports and the
final test evaluation outside it), per trial its last step, train/eval/wall seconds and first-step
time, every evaluation as (time, trial, step, val_acc), the chosen trial's score and its kept model's
test accuracy.

Methods:
- ``finetune-sweep``: the product as shipped (search_spaces/sst2.yaml's settings on the task's split).
- ``random``: Ray Tune random search, every trial to the last step: the compute baseline.
- ``ray-asha``: Ray Tune ``OptunaSearch`` (TPE) + ``ASHAScheduler``, a plain trainable (plain.py).
- ``hf-trainer``: ``Trainer.hyperparameter_search(backend="optuna")`` with a median pruner. It cannot
  search the loss (the Trainer's loss is its model's): cross-entropy only, 2 threads, one trial at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.task import LAYERS, LOSSES, LR_HIGH, LR_LOW, RANKS, SIZES, Size, load, write_tsv

METHODS = ["finetune-sweep", "random", "ray-asha", "hf-trainer"]
# finetune-sweep with one speed-up taken back (spec overrides), for before/after in the same run
VARIANTS = {
    "finetune-sweep/fp32": ["trial.precision=fp32"],  # before: no bf16 autocast
    # before: the median pruner on the objective (accuracy) from the second evaluation
    "finetune-sweep/acc-pruner": ["pruner.metric=null", "pruner.warmup_steps={grace}"],
    # not a speed-up: what Ray's dashboard (on by default, ~10 processes) costs in memory
    "finetune-sweep/no-dashboard": ["execution.dashboard=false"],
    # before: oneDNN's default primitive cache (1024 kernels, one per batch shape; env below)
    "finetune-sweep/onednn-1024": [],
    # before: ideep's default cache (1024 kernels, one per batch shape, for torch's bf16 matmuls; env below)
    "finetune-sweep/ideep-1024": [],
    # before: trial workers on glibc's malloc, not the jemalloc Ray ships (env below)
    "finetune-sweep/glibc-workers": [],
    # before: Tune's automatic loggers, TensorBoardX's among them (it imports torch into the driver)
    "finetune-sweep/tbx-logger": [],
    # before: Ray prestarts one idle worker per CPU, which Tune's trials never use (env below)
    "finetune-sweep/prestart": [],
    # not a speed-up: a project's later sweeps, whose MLflow database exists (another process made it,
    # outside the clock); every other run opens a new one (~1 CPU-s of schema migrations)
    "finetune-sweep/existing-store": [],
    # before: the trial workers' cyclic collector ran while they imported torch and transformers, and walked
    # those objects at every trial's start and end (env below: sweep.ray.worker.GC_FREEZE_ENV)
    "finetune-sweep/gc-in-workers": [],
    # not a speed-up: the shipped spec's own path, one training file (the pool) that the sweep splits 80/20
    # itself (OWN_SPLIT below), where every other run gives the benchmark's validation file
    "finetune-sweep/own-split": [],
    # before: Ray's socket clients retried once a second (Ray's default), and a starting raylet, connecting
    # to its own object store before that was open, waited a whole second about every other start
    "finetune-sweep/connect-retry-1s": [],
}
COMPARED_WITH: dict[str, str] = {}
"""A variant that takes a speed-up back from another variant is compared with that one."""
VARIANT_ENV = {
    "finetune-sweep/onednn-1024": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"},
    "finetune-sweep/ideep-1024": {"LRU_CACHE_CAPACITY": "1024"},
    "finetune-sweep/glibc-workers": {"RAY_LD_PRELOAD_ON_WORKERS": "0"},
    "finetune-sweep/tbx-logger": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"},
    "finetune-sweep/prestart": {"RAY_prestart_worker_first_driver": "1"},
    "finetune-sweep/gc-in-workers": {"SWEEP_WORKER_GC_FREEZE": "0"},
    "finetune-sweep/connect-retry-1s": {
        "RAY_raylet_client_connect_timeout_milliseconds": "1000",
        "RAY_raylet_client_num_connect_attempts": "10",
    },
}


EXISTING_STORE = "finetune-sweep/existing-store"
OWN_SPLIT = "finetune-sweep/own-split"


def _env() -> None:
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_DEDUP_LOGS": "1",
    }.items():
        os.environ.setdefault(key, value)


# --- finetune-sweep --------------------------------------------------------------------------------


def run_finetune_sweep(
    seed: int,
    size: Size,
    work: Path,
    variant: list[str] | None = None,
    existing_store: bool = False,
    own_split: bool = False,
) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from sweep.run import run_sweep
    from sweep.spec import load_spec

    data = load(size)
    files = {name: write_tsv(getattr(data, name), work / f"{name}.tsv") for name in ("train", "val", "test")}
    given_val = [f"trial.data.val_path={files['val']}"]
    if own_split:  # the pool as one file; the sweep's seeded, stratified 80/20 split
        files["train"] = write_tsv(data.train + data.val, work / "pool.tsv")
        given_val = ["trial.data.val_path=null", "trial.split.val_fraction=0.2"]
    spec = load_spec(
        Path(__file__).resolve().parents[1] / "search_spaces" / "sst2.yaml",
        [
            f"trial.data.path={files['train']}",
            *given_val,
            f"trial.data.test_path={files['test']}",
            "trial.data.max_rows=null",
            f"trial.data.max_length={size.max_length}",
            f"trial.optim.max_steps={size.max_steps}",
            f"trial.optim.warmup_ratio={size.warmup_steps / size.max_steps}",
            f"trial.eval.eval_every_steps={size.eval_every}",
            f"budget.num_trials={size.num_trials}",
            f"sampler.seed={seed}",
            f"pruner.warmup_steps={size.eval_every}",  # the spec's 20: prunable from the first evaluation
            f"execution.runs_dir={work / 'runs'}",
            f"tracking.uri=sqlite:///{work}/mlflow.db",
            "execution.verdict=false",
            *(o.format(grace=size.grace) for o in variant or []),
        ],
    )
    # imports outside the sweep clock, as for every method (run_sweep would import these while its data
    # check runs in a child process)
    began = time.time()
    from sweep import optuna_study, tracking  # noqa: F401
    from sweep.ray import tuner  # noqa: F401

    imports_s = time.time() - began
    if existing_store:
        store = f"from mlflow.tracking import MlflowClient; MlflowClient({spec.tracking.uri!r}).search_experiments()"
        subprocess.run([sys.executable, "-c", store], check=True)
    t0 = time.time()
    result = run_sweep(spec, echo=lambda line: None)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    trials, evals = [], []
    losses: dict[int, dict[int, float]] = {}  # per trial, val_loss per step (to study pruning rules)
    params: dict[int, dict[str, Any]] = {}
    runs = {
        r.data.tags.get("ray.trial_id"): r
        for r in client.search_runs([client.get_experiment_by_name("sst2").experiment_id])
    }
    for rec in result.trials:
        run = runs.get(rec.ray_id)
        if run is not None and rec.number is not None:
            for m in client.get_metric_history(run.info.run_id, "val_accuracy"):
                evals.append((m.timestamp / 1000, rec.number, m.step, m.value))
            losses[rec.number] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
            params[rec.number] = rec.params
        timings = rec.outcome.timings if rec.outcome is not None else None
        trials.append(
            {
                "trial": rec.number,
                "status": rec.status.value,
                "last_step": rec.step or 0,
                "train_s": timings.train_s if timings else 0.0,
                "eval_s": timings.eval_s if timings else 0.0,
                "wall_s": (rec.ended or 0) - (rec.started or 0),
                "first_step_at": getattr(timings, "first_step_at", None) if timings else None,
            }
        )
    best = result.best
    return {
        "t0": t0,
        "t_end": t0 + result.search_s,
        "trials": trials,
        "evals": evals,
        "best_val": best.value if best else None,
        "test_acc": (result.test_metrics or {}).get("test_accuracy"),
        "note": "",
        "imports_s": imports_s,
        "val_loss": losses,
        "params": params,
    }


# --- Ray Tune baselines (plain trainable) -------------------------------------------------------------


def _tune_trainable(config: dict[str, Any], data: Any, size_name: str, out_dir: str) -> None:
    import torch
    from ray import tune

    from benchmarks.plain import train, trainable_state

    torch.set_num_threads(1)
    trial_id = tune.get_context().get_trial_id()
    best = {"acc": -1.0}

    def report(step: int, acc: float, val_loss: float, model: Any, stats: dict[str, Any]) -> bool:
        # kept before reporting: a trial ASHA stops never returns from tune.report
        if acc > best["acc"]:
            best["acc"] = acc
            torch.save(trainable_state(model), Path(out_dir) / f"{trial_id}.pt")
        (Path(out_dir) / f"{trial_id}.json").write_text(json.dumps({"config": config, **stats}))
        tune.report({"val_acc": acc, "val_loss": val_loss, "step": step})
        return False

    train(config, data, SIZES[size_name], report)


def run_ray(seed: int, size: Size, work: Path, asha: bool) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    data = load(size)
    out_dir = work / "trials"
    out_dir.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rb-", dir="/tmp")  # (short: Ray's socket paths)
    t0 = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    space = {
        "lr": tune.loguniform(LR_LOW, LR_HIGH),
        "num_layers": tune.choice(LAYERS),
        "loss": tune.choice(LOSSES),
        "lora_r": tune.choice(RANKS),
    }
    search = OptunaSearch(metric="val_acc", mode="max", seed=seed) if asha else BasicVariantGenerator(random_state=seed)
    scheduler = (
        ASHAScheduler(
            time_attr="step",
            metric="val_acc",
            mode="max",
            max_t=size.max_steps,
            grace_period=size.grace,
            reduction_factor=3,
        )
        if asha
        else None
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(_tune_trainable, data=data, size_name=size.name, out_dir=str(out_dir)), {"cpu": 1}
        ),
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=size.num_trials,
            max_concurrent_trials=2,
            metric=None if asha else "val_acc",
            mode=None if asha else "max",
        ),
        run_config=tune.RunConfig(storage_path=str(work / "ray_results"), verbose=0),
    )
    tuner.fit()
    t_end = time.time()
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session files: each run left its own in /tmp
    records = {p.stem: json.loads(p.read_text()) for p in out_dir.glob("*.json")}
    trials, evals = [], []
    for number, (trial_id, rec) in enumerate(sorted(records.items(), key=lambda kv: kv[1]["first_step_at"])):
        rec["id"] = trial_id
        evals += [(t, number, step, acc) for t, step, acc in rec["evals"]]
        trials.append(
            {"trial": number, **{k: rec[k] for k in ("last_step", "train_s", "eval_s", "wall_s", "first_step_at")}}
        )
    chosen = max(records.values(), key=lambda r: max((acc for _, _, acc in r["evals"]), default=-1))
    import torch

    from benchmarks.plain import test_accuracy

    state = torch.load(out_dir / f"{chosen['id']}.pt")
    return {
        "t0": t0,
        "t_end": t_end,
        "trials": trials,
        "evals": evals,
        "best_val": max(acc for _, _, acc in chosen["evals"]),
        "test_acc": test_accuracy(chosen["config"], state, data, size),
        "note": "" if asha else "no early stopping",
    }


# --- transformers' built-in search -------------------------------------------------------------------


def run_hf(seed: int, size: Size, work: Path) -> dict[str, Any]:
    import numpy as np
    import optuna
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from benchmarks.plain import build, test_accuracy, trainable_state

    torch.set_num_threads(2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load(size)
    tokenizer, _ = build(2, 4)

    def dataset(rows: list[tuple[str, int]]) -> Any:
        enc = tokenizer([t for t, _ in rows], truncation=True, max_length=size.max_length)
        return Dataset.from_dict({**enc, "labels": [y for _, y in rows]})

    train_ds, val_ds = dataset(data.train), dataset(data.val)
    current: dict[str, Any] = {}
    log: dict[int, dict[str, Any]] = {}

    class Recorder(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            number = len(log)
            current.update(number=number, step_t=0.0)
            log[number] = {
                "trial": number,
                "evals": [],
                "train_s": 0.0,
                "eval_s": 0.0,
                "start": time.time(),
                "first_step_at": None,
                "last_step": 0,
                "best": -1.0,
                "state": None,
                "config": {**current.get("config", {}), "lr": args.learning_rate},
            }

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            current["step_t"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            rec = log[current["number"]]
            rec["train_s"] += time.perf_counter() - current["step_t"]
            rec["first_step_at"] = rec["first_step_at"] or time.time()
            rec["last_step"] = state.global_step
            rec["end"] = time.time()

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, model: Any = None, **kw: Any
        ) -> None:
            rec = log[current["number"]]
            acc = metrics["eval_accuracy"]
            rec["eval_s"] += metrics.get("eval_runtime", 0.0)
            rec["evals"].append((time.time(), state.global_step, acc))
            rec["end"] = time.time()
            if acc > rec["best"]:
                rec["best"], rec["state"] = acc, trainable_state(model)

    def model_init(trial: Any) -> Any:
        # the Trainer builds the model before it applies hp_space: the structure is suggested here
        layers = trial.suggest_categorical("num_layers", LAYERS) if trial is not None else 2
        r = trial.suggest_categorical("lora_r", RANKS) if trial is not None else 4
        current["config"] = {"num_layers": layers, "lora_r": r, "loss": "cross_entropy"}
        return build(layers, r)[1]

    def hp_space(trial: Any) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", LR_LOW, LR_HIGH, log=True),
        }

    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        max_steps=size.max_steps,
        eval_strategy="steps",
        eval_steps=size.eval_every,
        save_strategy="no",
        logging_strategy="no",
        lr_scheduler_type="linear",
        warmup_steps=size.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=0,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    t0 = time.time()
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
        callbacks=[Recorder()],
    )
    best = trainer.hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda m: m["eval_accuracy"],
        n_trials=size.num_trials,
        direction="maximize",
        backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=size.grace),
    )
    t_end = time.time()
    chosen = log[int(best.run_id)]
    return {
        "t0": t0,
        "t_end": t_end,
        "trials": [
            {k: r.get(k) for k in ("trial", "last_step", "train_s", "eval_s", "first_step_at")}
            | {"wall_s": r.get("end", r["start"]) - r["start"]}
            for r in log.values()
        ],
        "evals": [(t, r["trial"], step, acc) for r in log.values() for t, step, acc in r["evals"]],
        "best_val": chosen["best"],
        "test_acc": test_accuracy(chosen["config"], chosen["state"], data, size),
        "note": "loss not searchable (cross-entropy only); one trial at a time, 2 threads",
    }


def main() -> None:
    method, seed, size_name, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    _env()
    size = SIZES[size_name]
    with tempfile.TemporaryDirectory(prefix=f"bench-{method.replace('/', '_')}-") as tmp:
        work = Path(tmp)
        if method == "finetune-sweep" or method in VARIANTS:
            result = run_finetune_sweep(
                seed,
                size,
                work,
                VARIANTS.get(method),
                method == EXISTING_STORE,
                method == OWN_SPLIT,
            )
        elif method in ("random", "ray-asha"):
            result = run_ray(seed, size, work, asha=method == "ray-asha")
        elif method == "hf-trainer":
            result = run_hf(seed, size, work)
        else:
            raise SystemExit(f"method: {method!r} is not one of {METHODS + list(VARIANTS)}")
    out.write_text(json.dumps({"method": method, "seed": seed, "size": size_name, **result}))


if __name__ == "__main__":
    main()
