"""Fractional GPUs on Ray's scheduler: a node that declares one GPU (Ray accepts declared GPU counts on a
CPU machine) runs trials of 0.25 GPU four at a time, never five, and each trial sees that one GPU in
CUDA_VISIBLE_DEVICES (recorded on its run as ray.cuda_visible_devices)."""

import pytest

from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_with_one_gpu(tmp_path_factory):
    import ray

    # CPUs are not what limits here: 8 declared, so only the GPU fractions decide how many trials run
    ray.init(
        address="local", num_cpus=8, num_gpus=1, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray"))
    )
    yield
    ray.shutdown()


def _max_overlap(intervals: list[tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_quarter_gpu_trials_run_four_at_a_time_on_a_one_gpu_node(tmp_path, ray_with_one_gpu):
    spec = validate_spec(
        {
            "name": "packing",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "adaptation": {"method": "full"},
                "data": {"max_rows": 200, "max_length": 16},
                "optim": {"max_steps": 60, "batch_size": 8, "learning_rate": 1e-3},  # long enough to overlap
                "eval": {"eval_every_steps": 20},
            },
            "space": {"seed": {"type": "categorical", "choices": list(range(8))}},
            "sampler": {"kind": "grid"},
            "pruner": {"kind": "none"},
            "budget": {"num_trials": 8, "max_concurrent_trials": 8},
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25},
            "execution": {"runs_dir": str(tmp_path / "runs"), "save_best_model": False, "verdict": False},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        }
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert result.counts == {"completed": 8}
    trials = [r for r in runs_of(result.tracking_uri, "packing") if r.data.tags.get("sweep.role") == "trial"]
    assert len(trials) == 8
    assert {r.data.tags["ray.cuda_visible_devices"] for r in trials} == {"0"}  # each sees the one GPU
    assert len({r.data.tags["ray.node_id"] for r in trials}) == 1
    overlap = _max_overlap([(r.info.start_time, r.info.end_time) for r in trials])
    assert overlap <= 4, overlap  # 5 x 0.25 > 1 GPU: a fifth trial waits
    assert overlap >= 3, overlap  # and the GPU is shared (four start together; allow one to finish early)
