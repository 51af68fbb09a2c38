"""Offline, quiet, reproducible: every test runs with the hub off, Ray/MLflow telemetry off, and never
writes to a tracking server the environment names (each test passes its own sqlite URI)."""

import os
import signal

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Ctrl-C tests send SIGINT to the sweeps they start. A pytest launched in the background by a shell
# (`make test &`) has SIGINT ignored, and children inherit an ignored signal: restore the default here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
