"""The plan's check in a child process (``preflight_apart``): the driver never imports torch or
transformers for the sweep, and starts Ray while the child reads the data."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep import credentials
from sweep.errors import SpecError
from sweep.run.plan import SweepPlan, preflight
from sweep.run_dir import SPLIT_FILE
from sweep.spec import SweepSpec

_PLAN_MARK = "sweep-preflight-plan: "


class PendingPlan:
    """``preflight``'s answer, here already or on its way from a child process (``preflight_apart``)."""

    def __init__(
        self, plan: SweepPlan | None = None, problem: SpecError | None = None, split_file: Path | None = None
    ) -> None:
        self._plan, self._problem = plan, problem
        self._wait: Callable[[], SweepPlan] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.split_file = split_file  # where the check writes the data's split (a temp file)

    def done(self) -> bool:
        """True when the answer is known (checked in this process)."""
        return self._wait is None

    def result(self) -> SweepPlan:
        """The plan; raises SpecError as preflight does (waits for the child the first time)."""
        if self._wait is not None:
            wait, self._wait = self._wait, None
            try:
                self._plan = wait()
            except SpecError as exc:
                self._problem = exc
        if self._problem is not None:
            raise self._problem
        assert self._plan is not None
        return self._plan

    def cancel(self) -> None:
        """Stop the child (Ctrl-C while the sweep starts)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def keep_split(self, run_dir: Path) -> Path | None:
        """Move the split the check wrote into the run dir (``SPLIT_FILE``); its path there, or None if
        there is none (the trials then split the data themselves). On resume, the interrupted run's split
        stays where the check wrote none."""
        kept = run_dir / SPLIT_FILE
        part = run_dir / f".{SPLIT_FILE}.part"
        try:
            if self.split_file is not None and self.split_file.is_file():
                shutil.copyfile(self.split_file, part)  # (the temp dir may be another file system)
                part.replace(kept)  # whole or not at all: a resumed run's split stays if the copy fails
                self.split_file.unlink()
            return kept if kept.is_file() else None
        except OSError:
            logging.getLogger(__name__).debug("split not kept", exc_info=True)
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            return None

    def discard(self) -> None:
        """Remove what of the split file is left in the temp dir (a data mistake, Ctrl-C, a failed start),
        after a child still checking has stopped (it would write the file after)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self.split_file is not None:
            for left in (self.split_file, self.split_file.with_name(f".{self.split_file.name}.part")):
                with contextlib.suppress(OSError):
                    left.unlink(missing_ok=True)


def preflight_apart(spec: SweepSpec, apart: bool | None = None, keep_split: bool = False) -> PendingPlan:
    """Start ``preflight`` in a child process and return at once; ``result()`` waits for its plan (raising
    SpecError as preflight does). The driver meanwhile imports Ray, Optuna and MLflow and starts Ray, and
    never imports torch or transformers for the sweep (the child does, and exits), so it holds less memory
    while trials run.

    ``apart=None``: in a child unless this process has torch already (a notebook, tests), where checking
    here costs no memory and saves the child's imports. ``keep_split``: the check also writes the data's
    split to a temp file (``PendingPlan.split_file``), which the caller moves (``keep_split``) or removes
    (``discard``)."""
    split_file = None
    if keep_split:
        with contextlib.suppress(OSError):  # no usable temp dir: the trials split the data themselves
            split_file = Path(tempfile.gettempdir()) / f"fsweep-split-{os.getpid()}-{os.urandom(4).hex()}.npz"
    if apart is False or (apart is None and "torch" in sys.modules):
        try:
            return PendingPlan(preflight(spec, split_file), split_file=split_file)
        except SpecError as exc:
            return PendingPlan(problem=exc, split_file=split_file)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_PROGRAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    # a pipe: URL passwords never touch argv or disk
    asked = {"spec": spec.model_dump(mode="json"), "split_file": str(split_file) if split_file else None}
    proc.stdin.write(json.dumps(asked))
    proc.stdin.close()
    proc.stdin = None  # sent: communicate() below only reads (both pipes at once, so neither fills up)

    def plan() -> SweepPlan:
        try:
            out, err = proc.communicate()
        except BaseException:  # Ctrl-C: the child got it too; don't leave it behind
            proc.kill()
            raise
        found = [ln.removeprefix(_PLAN_MARK) for ln in out.splitlines() if ln.startswith(_PLAN_MARK)]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"preflight failed (exit {proc.returncode}):\n{credentials.mask(err[-4000:])}")
        answer = json.loads(found[-1])
        if "problems" in answer:
            raise SpecError(answer["problems"])
        return SweepPlan(**answer["plan"])

    pending = PendingPlan(split_file=split_file)
    pending._wait, pending._proc = plan, proc
    return pending


_CHILD_PROGRAM = "import gc; gc.disable(); from sweep.run.preflight import _preflight_child; _preflight_child()"
"""The child's program (the benchmark's variants change it)."""


def _preflight_child() -> None:
    """``preflight_apart``'s child: the spec and where to write the split (JSON) on stdin, its plan (or its
    problems) on stdout. It imports with the cyclic collector off (``_CHILD_PROGRAM``), then freezes
    those objects and turns it on for reading the data."""
    import dataclasses

    import trainers.data.read  # (pandas, numpy)
    import trainers.data.split
    import trainers.plan  # noqa: F401

    gc.freeze()
    gc.enable()
    asked = json.loads(sys.stdin.read())
    spec = SweepSpec.model_validate(asked["spec"])
    try:
        split_file = Path(asked["split_file"]) if asked["split_file"] else None
        answer: dict[str, Any] = {"plan": dataclasses.asdict(preflight(spec, split_file))}
    except SpecError as exc:
        answer = {"problems": exc.problems}
    print(_PLAN_MARK + json.dumps(answer), flush=True)
