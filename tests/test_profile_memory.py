"""benchmarks/profile_step.py --memory's reading of torch's allocator snapshot, on a
canned snapshot: the live blocks, the replayed peak and who allocated what (the CUDA run
itself is the lead's, on the device)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("profile_step", REPO / "benchmarks" / "profile_step.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["profile_step"] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("profile_step", None)


def _frames(*where):  # innermost first, as torch lists them
    return [{"filename": f, "name": n, "line": 1} for f, n in where]


TRAIN = (str(REPO / "app" / "train.py"), "train")
DATA = (str(REPO / "app" / "data.py"), "_load_images")
LOSS = (str(REPO / "rasterizer" / "ssim_triton.py"), "forward")
TORCH = ("/usr/lib/python3/site-packages/torch/autograd/__init__.py", "backward")


def test_peak_replay_and_grouping(ps):
    snap = {"segments": [{"blocks": [
        {"address": 0, "size": 100, "state": "active_allocated", "frames": _frames(DATA, TRAIN)},
        {"address": 100, "size": 50, "state": "inactive", "frames": []},
        {"address": 200, "size": 10, "state": "active_allocated", "frames": []},
    ]}]}
    live = ps.live_blocks(snap)
    assert set(live) == {0, 200}
    trace = [
        {"action": "alloc", "addr": 300, "size": 40, "frames": _frames(LOSS, TRAIN)},
        {"action": "alloc", "addr": 400, "size": 30, "frames": _frames(TORCH, TRAIN)},
        {"action": "free_requested", "addr": 300, "size": 40},
        {"action": "free_completed", "addr": 300, "size": 40},
        {"action": "alloc", "addr": 500, "size": 5, "frames": _frames(LOSS, TRAIN)},
    ]
    best, at = ps.peak_of_trace(live, trace)
    assert best == 180 and set(at) == {0, 200, 300, 400}  # before the 40 was freed
    groups = {label: (size, n) for label, size, n in ps.group_blocks(at)}
    assert groups["app/data.py:_load_images:1"] == (100, 1)
    assert groups["rasterizer/ssim_triton.py:forward:1"] == (40, 1)
    assert groups["app/train.py:train:1"] == (30, 1)  # torch's frames are skipped
    assert groups["(no stack recorded)"] == (10, 1)
