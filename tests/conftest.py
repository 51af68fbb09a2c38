"""Offline, quiet, reproducible: every test runs with the hub off, Ray/MLflow telemetry off, and never
writes to a tracking server the environment names (each test passes its own sqlite URI)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
