"""The trial's plan (data read, split, model checked) before any training."""

import os

import pytest

from tests.trainers.helpers import tiny_config
from trainers.errors import ConfigError
from trainers.plan import plan_trial

ROWS = "".join(f"review {i} was {'great' if i % 2 else 'awful'},{'pos' if i % 2 else 'neg'}\n" for i in range(40))


def test_a_data_file_rewritten_in_place_is_read_again(tmp_path, monkeypatch):
    """The plan is cached per process (a notebook plans many sweeps): keyed on the file as well as the
    config, so the same relative path holding other rows is read again, not answered from the cache."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("classification", data={"path": "data.csv"})
    (tmp_path / "data.csv").write_text("text,label\n" + ROWS)
    first = plan_trial(cfg)
    (tmp_path / "data.csv").write_bytes(b"\x00\xff binary")
    os.utime(tmp_path / "data.csv", ns=(1, 1))  # (a different stamp even on a coarse clock)
    with pytest.raises(ConfigError, match="binary"):
        plan_trial(cfg)
    (tmp_path / "data.csv").write_text("text,label\n" + ROWS + ROWS)
    assert plan_trial(cfg).fingerprints["data"] != first.fingerprints["data"]
