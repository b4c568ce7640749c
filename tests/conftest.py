"""Shared fixtures. Tests never touch the network: hubs are forced offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.flame_files import make_tiny_flame  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_flame() -> dict:
    """A small random model in FLAME's pickle layout (plain numpy), with landmark embeddings and UVs."""
    return make_tiny_flame(seed=0)


@pytest.fixture(scope="session")
def procedural_flame_dir(tmp_path_factory) -> Path:
    """The procedural FLAME-format head written once per session (seed 0)."""
    from headrecon.flame.procedural import write_procedural_flame

    out = tmp_path_factory.mktemp("procedural_flame")
    write_procedural_flame(out, seed=0)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
