"""The Ray executor on a tiny grid against a local 2-CPU ``ray.init`` (skipped without ray)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pkdgan.core import runs
from pkdgan.studies.grid import read_grid, run_grid
from pkdgan.studies.specs import PRESETS, GridRequest

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

ray = pytest.importorskip("ray")

TINY = dataclasses.replace(PRESETS["quick"], epochs=1, width=4, nz=8, image_size=16, max_train=40)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_ray_grid_matches_local_and_resumes(tmp_path, local_ray):
    req = GridRequest("edegan", "digits", classes=(0, 1), seeds=(0,), preset=TINY)
    out = run_grid(req, tmp_path / "ray", executor="ray", echo=lambda m: None)
    assert out["done"] == 2 and not out["failed"] and out["executor"] == "ray"
    again = run_grid(req, tmp_path / "ray", executor="ray", echo=lambda m: None)
    assert again["done"] == 0

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray workers, so both sides compute the same floats
    try:
        run_grid(req, tmp_path / "local", echo=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    _, specs, _ = read_grid(tmp_path / "ray")
    for s in specs:
        a = runs.read_npz(tmp_path / "ray" / s.name / runs.SCORES)
        b = runs.read_npz(tmp_path / "local" / s.name / runs.SCORES)
        np.testing.assert_allclose(a["latent"], b["latent"], rtol=1e-5, atol=1e-7)

