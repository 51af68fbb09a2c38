"""One Ray for the sweeps of a test module: `run_sweep` uses a Ray that is already running and leaves it up."""

import pytest


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """The module's Ray: its ``sweep.ray.session.RaySession``."""
    from sweep.ray.session import ray_session

    with ray_session(None, tmp_path_factory.mktemp("ray-session"), dashboard=False) as session:
        yield session
