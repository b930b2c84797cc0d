"""Shared fixtures. Runtime shape checking (jaxtyping + beartype) is on for the whole
pytest session via `--jaxtyping-packages` in pyproject's addopts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; SPLATLAB_DATA overrides (e.g. on the GPU machine).
SHARED_DATA = Path(os.environ.get("SPLATLAB_DATA", REPO.parent / "shared" / "data"))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `pytest -m cuda` on the device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def shared_dataset(name: str) -> Path:
    """Path of a shared capture, or a visible skip naming what is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data set {path} is not present")
    return path


@pytest.fixture
def shared_data():
    return shared_dataset
