"""optuna-dashboard on a sweep's study: the Optuna adapter's second module (``optuna_study`` holds the study)."""

from __future__ import annotations

from sweep.optuna_study import storage_of


def serve_dashboard(storage: str, host: str, port: int) -> None:
    """optuna-dashboard on the sweep's study storage (blocks until Ctrl-C)."""
    from optuna_dashboard import run_server

    run_server(storage_of(storage), host=host, port=port)
