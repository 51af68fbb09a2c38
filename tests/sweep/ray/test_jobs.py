"""`sweep submit`'s checks, made here before anything is sent (the cluster runs are in
tests/integration/test_cluster_jobs.py)."""

from pathlib import Path

import pathspec
import pytest

from sweep.cli import main
from sweep.ray import jobs
from sweep.ray.jobs import EXCLUDES


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("docker/.env", False),
        (".env", False),
        ("prod.env", False),
        ("certs/server.pem", False),
        ("keys/id.key", False),
        (".netrc", False),
        ("runs/demo/x/optuna.db", False),
        (".venv/bin/python", False),
        (".git/config", False),
        ("sweep/__pycache__/cli.cpython-311.pyc", False),
        ("sweep/cli.py", True),
        ("data/train.csv", True),  # often git-ignored: sent all the same
        ("search_spaces/demo.yaml", True),
        ("docker/env.example", True),
        ("a/b/.config/gcloud/credentials.db", False),
        ("svc/.docker/config.json", False),
        ("home/.ssh/id_ed25519", False),
        ("pkg/sub/build/x.py", False),
        ("docker/config.json", True),
    ],
)
def test_what_travels_with_a_job(path, sent):
    # Ray matches working_dir excludes as gitignore patterns (pathspec, gitwildmatch)
    spec = pathspec.PathSpec.from_lines("gitwildmatch", EXCLUDES)
    assert spec.match_file(path) is not sent


def test_the_excludes_match_here_as_in_ray():
    # the walk here decides with the installed pathspec; Ray with the copy it vendors
    vendored = pytest.importorskip("ray._private.thirdparty.pathspec")
    ours = pathspec.PathSpec.from_lines("gitwildmatch", EXCLUDES)
    rays = vendored.PathSpec.from_lines("gitwildmatch", EXCLUDES)
    names = [p.strip("*/") or "x" for p in EXCLUDES] + ["x", "a.pub", "config.json", "gcloud"]
    paths = [f"{d}{n}{s}" for d in ("", "a/", "a/.config/", "b/.docker/") for n in names for s in ("", "/", "/f")]
    assert [p for p in paths if ours.match_file(p) != rays.match_file(p)] == []


def _spec(tmp_path, url_line: str = "") -> str:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {max_rows: 40}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n" + url_line
    )
    return str(path)


def test_a_literal_password_is_refused_before_anything_is_sent(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working dir walked for the upload
    spec = _spec(tmp_path, "execution: {storage: 'postgresql+psycopg://u:Plain-Pw-31@db/optuna'}\n")
    assert main(["submit", spec, "--address", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: execution.storage: the URL holds a password, which would travel with the job")
    assert "${ENV_VAR}" in err and "Plain-Pw-31" not in err
    # a reference is fine (it is read on the cluster): the next problem is the unreachable address
    spec = _spec(tmp_path, "execution: {storage: 'postgresql+psycopg://u:${PGPASSWORD}@db/optuna'}\n")
    assert main(["submit", spec, "--address", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("error: --address: cannot reach Ray's Job API at http://127.0.0.1:9")


def test_relative_data_needs_submitting_from_the_working_dir(tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "d.csv").write_text(
        "text,label\n" + "".join(f"row {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {path: project/data/d.csv}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n"
    )
    monkeypatch.chdir(tmp_path)
    code = main(["submit", str(spec), "--working-dir", str(project), "--address", "http://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trial.data.path: 'project/data/d.csv' is relative: read from here")
    assert f"run sweep submit from {project}" in err


def test_no_address_and_no_local_cluster_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["status", "some-job"]) == 2
    assert "make cluster-up" in capsys.readouterr().err


# --- what a job uploads (`sweep submit --dry-run` lists it; the folder Ray uploads holds exactly that) ---

ROWS = "text,label\n" + "".join(f"row {i} {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
CREDENTIALS = [
    ".git-credentials",
    "credentials.json",
    "server.pem",
    "tls.key",
    "cert.p12",
    "cert.pfx",
    "id_rsa",
    "id_rsa.pub",
    "id_ed25519",
    "id_ecdsa",
    "id_dsa",
    ".ssh/config",
    ".aws/credentials",
    ".kube/config",
    ".gcloud/token",
    ".config/gcloud/credentials.db",
    ".envrc",
    ".env",
    ".env.prod",
    ".netrc",
    ".pgpass",
    "vault.kdbx",
    ".docker/config.json",
]


def _project(root: Path, files: dict[str, str | bytes], spec_extra: str = "") -> str:
    """A project at ``root`` (the cwd of the test) holding ``files``, data/d.csv and spec.yaml."""
    for name, content in {"data/d.csv": ROWS, "train.py": "print('hi')\n", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "spec.yaml").write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {path: data/d.csv}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n" + spec_extra
    )
    return "spec.yaml"


def _dry_run(capsys, *args: str) -> tuple[set[str], str]:
    """The project's files `sweep submit --dry-run` lists (the job's spec aside), and its whole output.
    An unreachable --address proves nothing is contacted."""
    assert main(["submit", *args, "--dry-run", "--address", "http://127.0.0.1:9"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    listed = out.split("\nleft out (")[0].splitlines()[1:]
    assert out.rstrip().endswith("dry run: nothing was submitted")
    assert listed[-1].split()[2].startswith(".sweep-jobs/sweep-s-") and "(written for the job" in listed[-1]
    return {line.split()[2] for line in listed[:-1]}, out


def test_dry_run_lists_no_credential_file_at_any_depth(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {name: "secret" for name in CREDENTIALS} | {f"sub/{n}": "secret" for n in CREDENTIALS})
    files, out = _dry_run(capsys, spec)
    assert {"data/d.csv", "train.py"} <= files
    assert not [f for f in files if "secret" in (tmp_path / f).read_text()], out
    assert "(credentials: id_rsa*)" in out and ".ssh/  (credentials: .ssh/)" in out


def test_a_link_leaving_the_project_is_refused(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("secret")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    spec = _project(project, {})
    (project / "data" / "more").symlink_to(home)
    assert main(["submit", spec, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data/more: a link to {home}, outside the working dir {project}")
    assert ".rayignore" in err and len(err.strip().splitlines()) == 1
    (project / ".rayignore").write_text("data/more\n")  # the fix it names
    files, out = _dry_run(capsys, spec)
    assert "data/more/  (.rayignore: data/more)" in out and not any("id_rsa" in f for f in files)


def test_a_link_inside_the_project_follows_but_not_into_what_is_left_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {"shared/vocab.txt": "a b", ".aws/credentials": "secret"})
    (tmp_path / "vocab").symlink_to(tmp_path / "shared")
    (tmp_path / "keys").symlink_to(tmp_path / ".aws")
    files, out = _dry_run(capsys, spec)
    assert {"vocab/vocab.txt", "shared/vocab.txt"} <= files  # Ray follows links: so does the list
    assert "keys/  (a link to .aws, credentials: .aws/)" in out and not any("credentials" in f for f in files)


def test_a_link_loop_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {})
    (tmp_path / "data" / "again").symlink_to(tmp_path / "data")
    assert main(["submit", spec, "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: data/again: a link back to {tmp_path / 'data'} (a loop)")


def test_a_custom_runs_dir_and_its_databases_are_left_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(
        tmp_path,
        {
            "results/sweeps/s/optuna.db": "db",
            "results/sweeps/s/model.safetensors": "weights",
            "results/notes.md": "x",
            "results/study.db": "db",
        },
    )
    files, out = _dry_run(
        capsys, spec, "execution.runs_dir=results/sweeps", "execution.storage=sqlite:///results/study.db"
    )
    assert "results/notes.md" in files and not [f for f in files if f.startswith("results/sweeps")]
    assert (
        "results/sweeps/  (execution.runs_dir)" in out and "results/study.db  (execution.storage (a database))" in out
    )


@pytest.mark.parametrize("folder", ["build", "docs", "runs"])
def test_folders_left_out_at_any_depth_and_data_under_them_is_refused(tmp_path, capsys, monkeypatch, folder):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {f"pkg/sub/{folder}/x.py": "x", f"corpus/{folder}/d.csv": ROWS})
    files, out = _dry_run(capsys, spec)
    assert not [f for f in files if f"/{folder}/" in f] and f"pkg/sub/{folder}/" in out
    assert main(["submit", spec, f"trial.data.path=corpus/{folder}/d.csv", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: trial.data.path: 'corpus/{folder}/d.csv' is not sent to the cluster: corpus/{folder}/ is left out "
        f"(results/caches: {folder}/); move it, or give an absolute path every node can read\n"
    )


def test_an_upload_over_the_cap_is_refused_naming_the_biggest_entries(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {"weights/big.bin": b"\0" * (3 << 20), "small.bin": b"\0" * (1 << 20)})
    assert main(["submit", spec, "--dry-run", "--max-upload-mib", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --working-dir: the upload is 4.0 MiB (") and "over the 2 MiB cap" in err
    assert "biggest: weights/ (3.0 MiB), small.bin (1.0 MiB)" in err and "in a .rayignore" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / ".rayignore").write_text("weights/\n")
    files, out = _dry_run(capsys, spec, "--max-upload-mib", "2")
    assert "small.bin" in files and "(cap 2 MiB)" in out.splitlines()[0]


def test_the_spec_given_is_not_uploaded_the_resolved_one_is(tmp_path, capsys, monkeypatch):
    # the file holds a literal password that the override hides: the job must not carry the file
    monkeypatch.chdir(tmp_path)
    spec = _project(tmp_path, {}, "execution: {storage: 'postgresql+psycopg://u:Plain-Pw-31@db/optuna'}\n")
    override = "execution.storage=postgresql+psycopg://u:${PGPASSWORD}@db/optuna"
    files, out = _dry_run(capsys, spec, override)
    assert "spec.yaml" not in files and "spec.yaml  (the spec given: the job runs its resolved copy)" in out
    assert "Plain-Pw-31" not in out

    class Client:  # what Ray is handed: the folder it uploads
        def submit_job(self, runtime_env, entrypoint, **_):
            root = Path(runtime_env["working_dir"])
            self.sent = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
            self.job_spec = (root / entrypoint.split()[-1]).read_text()
            return "job-1"

    client = Client()
    monkeypatch.setattr("sweep.ray.jobs._client", lambda url: client)
    assert main(["submit", spec, override, "--address", "http://127.0.0.1:9"]) == 0
    assert {f for f in client.sent if not f.startswith(".sweep-jobs/")} == files
    assert "${PGPASSWORD}" in client.job_spec and "Plain-Pw-31" not in client.job_spec
    assert not (tmp_path / ".sweep-jobs").exists()  # nothing is written into the project
    assert "uploading 3 files" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("address", "in_clear"),
    [
        ("http://10.0.0.5:8265", True),  # `--address 10.0.0.5:8265` becomes this
        ("http://head.example.org:8265", True),
        ("https://head.example.org:8265", False),
        ("http://127.0.0.1:8265", False),  # the machine itself, or a tunnel's local end
        ("http://localhost:8265", False),
        ("http://[::1]:8265", False),
    ],
)
def test_the_token_crossing_a_network_unencrypted_is_said(address, in_clear, capsys, monkeypatch):
    """Issue 33, finding 7: a bare --address host:8265 became http:// and sent Ray's token in clear text
    without a word. Now the client warns (one line on stderr) wherever that happens."""
    import ray.job_submission

    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cr3t-t0k3n")
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address, headers: headers)
    assert jobs.in_clear_text(address) is in_clear
    assert jobs._client(address) == {"Authorization": "Bearer s3cr3t-t0k3n"}
    err = capsys.readouterr().err
    assert (
        err.startswith(f"warning: --address: {address} is plain http to another machine") and "s3cr3t" not in err
    ) is in_clear
    assert len(err.splitlines()) == (1 if in_clear else 0)
