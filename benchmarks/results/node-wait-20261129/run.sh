#!/bin/sh
# from the repo root: sh benchmarks/results/node-wait-20261129/run.sh > benchmarks/results/node-wait-20261129/out.txt
here=$(dirname "$0")
for i in 1 2 3 4 5 6 7 8; do
  echo "Ray's own wait (GetNode, once a second):"; PYTHONPATH=. RAY_USAGE_STATS_ENABLED=0 .venv/bin/python "$here/node_wait_probe.py" ray 2>&1 | grep "^init"
  echo "the sweep's (every 50 ms):"; PYTHONPATH=. RAY_USAGE_STATS_ENABLED=0 .venv/bin/python "$here/node_wait_probe.py" 2>&1 | grep "^init"
done
