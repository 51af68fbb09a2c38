"""What a `sweep submit` sends to the cluster: the project, less what must never travel, walked here.

Ray uploads a working dir by walking it: it skips what its ``excludes`` and each folder's ``.rayignore``
match (gitignore patterns, checked as ``pathspec`` gitwildmatch against the path relative to the working
dir, or to the folder of the ignore file, at any depth unless anchored), and it follows links. We walk
the project the same way, refuse links that leave it, leave out credentials and results, cap the size,
and copy what is left into a fresh folder: that folder is what Ray uploads, so ``--dry-run``'s list is
the upload.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pathspec

from sweep.errors import SweepError

# Ray's own default excludes (ray_constants.RAY_RUNTIME_ENV_DEFAULT_EXCLUDES), spelt as Ray spells them
RAY_DEFAULTS = [".git", ".venv", "venv", "__pycache__"]
# results, environments, caches, build output
RESULTS = [
    "runs/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".hypothesis/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    "mlruns/",
    "mlartifacts/",
    "mlflow.db",
    "docs/",
    "build/",
    "dist/",
    ".dev/",
    ".whl/",
]
# where keys, tokens and passwords live: .gitignore is not applied (it often names the data a sweep
# needs), so they are named here; a pattern with a slash inside is anchored, hence the **/
CREDENTIALS = [
    ".git-credentials",
    "credentials.json",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "id_dsa*",
    ".ssh/",
    ".gnupg/",
    ".aws/",
    ".kube/",
    ".gcloud/",
    "**/.config/gcloud/",
    "**/.docker/config.json",
    ".envrc",
    ".env",
    ".env.*",
    "*.env",
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".vault-token",
    ".htpasswd",
]
EXCLUDES = RAY_DEFAULTS + RESULTS + CREDENTIALS  # also given to Ray as the job's runtime_env excludes
_WHY = {**{p: "Ray's default" for p in RAY_DEFAULTS}, **{p: "results/caches" for p in RESULTS}}
_WHY.update({p: "credentials" for p in CREDENTIALS})
MAX_UPLOAD_MIB = 100  # Ray refuses a package of 512 MiB (its gRPC limit) and warns from half that
IGNORE_FILES = (".rayignore",)  # applied here, not sent: Ray would apply them again to the copy


def _spec(lines: Iterable[str]) -> pathspec.PathSpec:
    with warnings.catch_warnings():  # pathspec>=1 renames Ray's "gitwildmatch" (same matching)
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


@functools.lru_cache(maxsize=1024)
def _one(line: str) -> pathspec.PathSpec:
    return _spec([line])


@dataclass(frozen=True)
class _Rules:
    """Patterns of one source (the excludes, or one ignore file), matched relative to ``base``."""

    base: PurePosixPath
    lines: tuple[str, ...]
    source: str
    spec: pathspec.PathSpec = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", _spec(self.lines))

    def why(self, rel: PurePosixPath, is_dir: bool) -> str | None:
        """The rule that leaves ``rel`` out, or None. Ray asks about a folder as ``name`` and leaves it out
        file by file when only ``name/`` matches; without a ``!`` pattern that is the whole folder, said once."""
        names = [str(rel.relative_to(self.base))]
        if is_dir and not any(ln.startswith("!") for ln in self.lines):
            names.append(names[0] + "/")
        sub = next((name for name in names if self.spec.match_file(name)), None)
        if sub is None:
            return None
        line = ""  # the first pattern matching after the last negation that matched: one that decides
        for ln in self.lines:
            if _one(ln).match_file(sub) or (ln.startswith("!") and _one(ln[1:]).match_file(sub)):
                line = "" if ln.startswith("!") else line or ln
        return f"{_WHY.get(line, 'excludes') if self.source == 'excludes' else self.source}: {line.strip()}"


_EXCLUDES = _Rules(PurePosixPath(), tuple(EXCLUDES), "excludes")


@dataclass
class Upload:
    """The files Ray will upload from ``root`` (relative paths, sizes) and what was left out (a folder
    written ``name/``: all of it), and why."""

    root: Path
    files: dict[PurePosixPath, int] = field(default_factory=dict)
    empty_dirs: list[PurePosixPath] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def why_not(self, rel: PurePosixPath) -> str | None:
        """None when ``rel`` (a file, or a folder with files) is uploaded; else why it is not."""
        if rel in self.files or any(rel in f.parents for f in self.files):
            return None
        for left in (rel, *rel.parents):
            for key in (f"{left}/", str(left)):
                if key in self.left_out:
                    return f"{key} is left out ({self.left_out[key]})"
        return "it is not in the upload"

    def largest(self, count: int = 3) -> list[tuple[str, int]]:
        """The biggest top-level entries (a folder counts its files), biggest first."""
        sizes: dict[str, int] = {}
        for rel, size in self.files.items():
            top = rel.parts[0] + ("/" if len(rel.parts) > 1 else "")
            sizes[top] = sizes.get(top, 0) + size
        return sorted(sizes.items(), key=lambda kv: -kv[1])[:count]

    def copy_to(self, dest: Path) -> None:
        """Copy the upload (links followed, as Ray would) into ``dest``, the folder Ray then uploads."""
        for rel in self.files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(self.root / rel, target)
            except OSError as exc:
                raise SweepError(f"{rel}: cannot copy it into the upload ({exc.strerror}); retry") from None
        for rel in self.empty_dirs:
            (dest / rel).mkdir(parents=True, exist_ok=True)

    def summary(self, made: Mapping[str, int], max_mib: float) -> str:
        total, count = self.total_bytes + sum(made.values()), len(self.files) + len(made)
        return f"{count} files, {mib(total)} (cap {max_mib:g} MiB), from {self.root}"

    def describe(self, made: Mapping[str, int], max_mib: float) -> list[str]:
        """What ``sweep submit --dry-run`` prints: each file and its size, the total against the cap, and
        what was left out by which rule. ``made``: the files written for the job (its spec), with sizes."""
        lines = [f"would upload {self.summary(made, max_mib)}:"]
        lines += [f"  {mib(size):>10}  {rel}" for rel, size in sorted(self.files.items())]
        lines += [f"  {mib(size):>10}  {name}  (written for the job: the spec it runs)" for name, size in made.items()]
        lines.append(f"left out ({len(self.left_out)}):")
        lines += [f"  {rel}  ({why})" for rel, why in sorted(self.left_out.items())]
        return lines


def mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 / 10 else f"{num_bytes / 1024:.1f} KiB"


def select(root: Path, literal: Mapping[Path, str] | None = None, *, gitignore: bool = False) -> Upload:
    """Walk ``root`` as Ray walks a working dir. ``literal``: paths left out as a whole (the runs dir,
    the spec given), each with why. ``gitignore``: apply .gitignore files too (Ray's default, but ours
    is not: $RAY_RUNTIME_ENV_IGNORE_GITIGNORE). Raises SweepError for a link that leaves ``root``, a link
    loop, or a file that cannot be read."""
    base = root.resolve()
    exact = {}
    for path, why in (literal or {}).items():
        for form in (Path(os.path.abspath(path)), path.resolve()):  # as written, and where it leads
            if form.is_relative_to(base) and form != base:
                exact[PurePosixPath(form.relative_to(base).as_posix())] = why
    walker = _Walk(base, exact, IGNORE_FILES + ((".gitignore",) if gitignore else ()))
    walker.walk(base, PurePosixPath(), [_EXCLUDES], {base})
    return walker.upload


class _Walk:
    def __init__(self, base: Path, exact: dict[PurePosixPath, str], ignore_files: tuple[str, ...]) -> None:
        self.base, self.exact, self.ignore_files = base, exact, ignore_files
        self.upload = Upload(base)

    def rules_in(self, folder: Path, rel: PurePosixPath) -> list[_Rules]:
        return [
            _Rules(rel, tuple((folder / name).read_text(errors="replace").splitlines()), str(rel / name))
            for name in self.ignore_files
            if (folder / name).is_file()
        ]

    def why(self, rel: PurePosixPath, is_dir: bool, rules: list[_Rules]) -> str | None:
        if rel in self.exact:
            return self.exact[rel]
        return next((w for r in rules if (w := r.why(rel, is_dir))), None)

    def why_target(self, rel: PurePosixPath) -> str | None:
        """Why a path the walk reaches through a link would be left out where it really is."""
        rules = [_EXCLUDES]
        for depth in range(1, len(rel.parts) + 1):
            part = PurePosixPath(*rel.parts[:depth])
            if why := self.why(part, (self.base / part).is_dir(), rules):
                return why
            rules = rules + self.rules_in(self.base / part, part)
        return None

    def walk(self, folder: Path, rel: PurePosixPath, rules: list[_Rules], real: set[Path]) -> None:
        """Add what ``folder`` holds to the upload, and what it leaves out (a folder as ``name/``)."""
        rules = rules + self.rules_in(folder, rel)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise SweepError(f"{rel}/: cannot list it ({exc.strerror}); list it in a .rayignore") from None
        if not entries:  # Ray sends an empty folder as it is
            self.upload.empty_dirs.append(rel)
        for entry in entries:
            sub, path = rel / entry.name, Path(entry.path)
            why = self.why(sub, path.is_dir(), rules)
            if why is None and entry.name in self.ignore_files:
                why = "applied here, not sent"
            if why is None and entry.is_symlink():
                why = self.check_link(sub, path)
            if why is None and path.is_dir():
                if path.resolve() in real:
                    raise SweepError(
                        f"{sub}: a link back to {path.resolve()} (a loop); remove it or list it in .rayignore"
                    )
                self.walk(path, sub, rules, real | {path.resolve()})
            elif why is None and path.is_file():
                self.add_file(sub, path)
            else:
                self.upload.left_out[f"{sub}/" if path.is_dir() else str(sub)] = why or "neither file nor folder"

    def check_link(self, sub: PurePosixPath, path: Path) -> str | None:
        target = path.resolve()
        if not target.exists():
            return "a broken link"
        if not target.is_relative_to(self.base):
            raise SweepError(
                f"{sub}: a link to {target}, outside the working dir {self.base}; Ray follows links, so "
                "everything there would be uploaded; remove the link or list it in .rayignore (data outside "
                "the project is given by an absolute path every node can read)"
            )
        inside = PurePosixPath(target.relative_to(self.base).as_posix())
        why = self.why_target(inside) if inside.parts else "a link to the working dir itself"
        return f"a link to {inside}, {why}" if why else None

    def add_file(self, sub: PurePosixPath, path: Path) -> None:
        if not os.access(path, os.R_OK):
            raise SweepError(f"{sub}: cannot be read, so it cannot be uploaded; list it in .rayignore")
        self.upload.files[sub] = path.stat().st_size


def check_size(upload: Upload, max_mib: float) -> None:
    """A one-line SweepError when the upload is over ``max_mib``, naming its biggest entries."""
    if upload.total_bytes <= max_mib * 2**20:
        return
    biggest = ", ".join(f"{name} ({mib(size)})" for name, size in upload.largest())
    raise SweepError(
        f"--working-dir: the upload is {mib(upload.total_bytes)} ({len(upload.files)} files from {upload.root}), "
        f"over the {max_mib:g} MiB cap; biggest: {biggest}; list what the job does not need in a .rayignore, "
        "give large data as an absolute path every node can read, or raise --max-upload-mib "
        "(see what goes: sweep submit --dry-run)"
    )
