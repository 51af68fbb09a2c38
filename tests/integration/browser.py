"""Headless Chromium for the browser tests: the rendered DOM of a page, and a screenshot of it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "no chromium (the CI installs it: apt-get install -y --no-install-recommends chromium)"


def _chromium(*args: str, timeout: int = 120) -> str:
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp()
    try:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dump_dom(url: str, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (React pages need the virtual time budget)."""
    return _chromium(f"--virtual-time-budget={budget_ms}", "--window-size=1400,900", "--dump-dom", url)


def screenshot(url: str, path: Path, budget_ms: int = 20000, size: str = "1280,720") -> None:
    _chromium(f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={path}", url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status < 500:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds}s")
