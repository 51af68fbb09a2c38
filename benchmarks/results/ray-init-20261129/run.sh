#!/bin/sh
# from the repo root: sh benchmarks/results/ray-init-20261129/run.sh > benchmarks/results/ray-init-20261129/out.txt
here=$(dirname "$0")
for i in 1 2 3 4 5 6 7 8; do
  echo "Ray's default (1 s retry):"; RAY_USAGE_STATS_ENABLED=0 .venv/bin/python "$here/probe.py"
  echo "50 ms retry:"; RAY_USAGE_STATS_ENABLED=0 RAY_raylet_client_connect_timeout_milliseconds=50 \
    RAY_raylet_client_num_connect_attempts=200 .venv/bin/python "$here/probe.py"
done
