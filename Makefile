# finetune-sweep — `make sweep` runs the demo sweep, `make test` runs the tests.
# Choose your torch build: the default is the CPU wheel; GPU users pass e.g.
#   make setup TORCH="torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
SPEC   ?= search_spaces/demo.yaml
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup sweep validate test test-fast quality style docs bench bench-all mlflow-ui dashboard optuna-dashboard clean \
	demo-data submit cluster-up cluster-down bench-quick bench-start bench-trial bench-gpu

MLFLOW_PORT ?= 5000
OPTUNA_PORT ?= 8080
RUN        ?=
ADDRESS    ?=
WORKERS    ?= 1
CPUS       ?= 1
GPUS       ?= 0

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, in the same resolver run, so nothing pulls another build
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	touch $(STAMP)

sweep: setup
	$(BIN)/sweep run $(SPEC)

validate: setup
	$(BIN)/sweep validate $(SPEC)

# everything: real Ray, MLflow, PostgreSQL and Chromium (CI runs it); the slowest tests are listed at the end
test: setup
	$(BIN)/pytest -q --durations=25

# on every change: no Ray, no servers, no sweeps in subprocesses (tests/fast_tier/ refuses them)
test-fast: setup
	$(BIN)/pytest -q -m "not integration"

quality: setup
	$(BIN)/ruff check sweep trainers tests benchmarks
	$(BIN)/ruff format --check sweep trainers tests benchmarks
	$(BIN)/mypy sweep trainers

style: setup
	$(BIN)/ruff check --fix sweep trainers tests benchmarks
	$(BIN)/ruff format sweep trainers tests benchmarks

# the spec reference (docs/spec.md) and its JSON Schema for editors (docs/spec.schema.json), from sweep/spec.py
docs: setup
	$(BIN)/python -m sweep.spec_docs

# finetune-sweep vs three baselines on ../shared/bench/TASK.md, 3 seeds each (~40 minutes a seed on 2
# cores), plus finetune-sweep with each of the full task's speed-ups taken back (before/after, paired on
# VARIANT_SEEDS, ~4 minutes each); writes benchmarks/results/ and the table in docs/performance.md.
# SEEDS="0" for a first look; BENCH_VARIANTS= for the four methods alone. The start-up speed-ups are
# bench-start's (one seed of the full task says little about a start); bench-all runs every variant too.
SEEDS ?= 0 1 2
VARIANT_SEEDS ?= $(firstword $(SEEDS))
BENCH_VARIANTS ?= finetune-sweep/fp32 finetune-sweep/acc-pruner finetune-sweep/onednn-1024 \
	finetune-sweep/ideep-1024 finetune-sweep/glibc-workers finetune-sweep/tbx-logger finetune-sweep/no-dashboard
bench: setup
	$(BIN)/python -m benchmarks.bench --size full --seeds $(SEEDS) \
		--methods finetune-sweep random ray-asha hf-trainer $(BENCH_VARIANTS) --variant-seeds $(VARIANT_SEEDS) --docs

bench-all: setup
	$(BIN)/python -m benchmarks.bench --size full --seeds $(SEEDS) --all --variant-seeds $(VARIANT_SEEDS) --docs

# the same harness, CI-sized (a few minutes): says the harness and every method work, not which is faster
QUICK_SEEDS ?= 0 1 2
bench-quick: setup
	$(BIN)/python -m benchmarks.bench --size quick --seeds $(QUICK_SEEDS)

# sweep start -> first training step, finetune-sweep against the plain Ray Tune script and with each
# start-up speed-up taken back: the full task's data and model, two 20-step trials a run (~45 minutes)
START_SEEDS ?= 0 1 2 3 4
bench-start: setup
	$(BIN)/python -m benchmarks.bench --size start --seeds $(START_SEEDS) --methods finetune-sweep ray-asha \
		finetune-sweep/tbx-logger finetune-sweep/prestart finetune-sweep/existing-store \
		finetune-sweep/gc-in-workers finetune-sweep/own-split finetune-sweep/connect-retry-1s

# on a machine with a GPU: the SST-2 sweep with 1, 2 and 4 trials sharing it, trials/hour and GPU memory
bench-gpu: setup
	$(BIN)/python -m benchmarks.gpu_packing --out benchmarks/results/gpu-$$(date -u +%Y%m%d-%H%M%S) --work $$(mktemp -d)

# where one trial's and the demo sweep's time and memory go
bench-trial: setup
	$(BIN)/python benchmarks/trial_bench.py
	$(BIN)/python benchmarks/sweep_bench.py

demo-data: setup
	$(BIN)/python -m trainers.demo

mlflow-ui: setup
	@echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) — open the experiment named after the sweep and add ?workflowType=machine_learning to its address for its runs (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
		--backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# a sweep as a Ray job: on the cluster ADDRESS names (http://HEAD:8265), else the one cluster-up started
submit: setup
	$(BIN)/sweep submit $(SPEC) $(if $(ADDRESS),--address $(ADDRESS))

# a real Ray cluster on this machine: a head and WORKERS worker nodes on 127.0.0.1, files in runs/cluster/
cluster-up: setup
	$(BIN)/sweep cluster up --workers $(WORKERS) --cpus $(CPUS) --gpus $(GPUS)

cluster-down: setup
	$(BIN)/sweep cluster down

dashboard: setup
	$(BIN)/sweep dashboard

optuna-dashboard: setup
	$(BIN)/sweep optuna-dashboard $(RUN) --port $(OPTUNA_PORT)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
