"""benchmarks/peer_compare.py's reading of what the two trainers print, on canned output:
the peer runner's summary line, splatlab's metrics.json and log.jsonl evaluations, and
where its row goes in RESULTS.md."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pc():
    spec = importlib.util.spec_from_file_location("peer_compare", REPO / "benchmarks" / "peer_compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peer_compare"] = mod  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("peer_compare", None)


# As `.device/peer/run` prints it (format string in ../shared/peer/run), amid build noise.
PEER_OUT = """Building wheel for fused-ssim ... done
peer /tmp/peer/beer: 7000 steps, 74.9 s of training, 93.5 steps/s, test PSNR 23.881, SSIM 0.9334, 100034 Gaussians, 1.23 GB
"""


def test_parse_peer_line(pc):
    r = pc.parse_peer(PEER_OUT)
    assert (r.steps, r.train_seconds, r.psnr, r.ssim, r.gaussians) == (7000, 74.9, 23.881, 0.9334, 100034)
    # simple_trainer's "GB" is GiB (max_memory_allocated / 1024**3): reported in 1e9 bytes
    assert r.peak_mem_gb == pytest.approx(1.23 * 1024**3 / 1e9)
    # the last summary wins when a log holds several; a failed run names its tail
    two = PEER_OUT + PEER_OUT.splitlines()[1].replace("7000 steps", "30000 steps") + "\n"
    assert pc.parse_peer(two).steps == 30000
    with pytest.raises(pc.CompareError, match="no peer summary line.*CUDA out of memory"):
        pc.parse_peer("Traceback ...\nRuntimeError: CUDA out of memory\n")


def test_read_splat_run(pc, tmp_path):
    metrics = {"steps": 7000, "train_seconds": 40.1, "psnr": 24.54, "ssim": 0.93,
               "num_gaussians": 100034, "peak_memory_gb": 1.02, "lpips": None}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    r = pc.read_splat_run(tmp_path)
    assert (r.steps, r.train_seconds, r.psnr, r.gaussians, r.peak_mem_gb) == (7000, 40.1, 24.54, 100034, 1.02)
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "psnr": None}))
    with pytest.raises(pc.CompareError, match="metrics.json"):
        pc.read_splat_run(tmp_path)


def _log(events):
    return [json.dumps(e) for e in events] + [""]


def test_time_to_quality_reads_eval_events(pc):
    lines = _log([
        {"event": "TrainStarted", "start_step": 0},
        {"event": "StepDone", "step": 500, "train_seconds": 3.0, "loss": 0.1},
        {"event": "EvalDone", "step": 500, "psnr": 20.0, "ssim": 0.8},
        {"event": "StepDone", "step": 1000, "train_seconds": 6.5},
        {"event": "EvalDone", "step": 1000, "psnr": 23.9, "ssim": 0.9},
        {"event": "EvalDone", "step": 1500, "psnr": 24.2, "ssim": 0.9, "train_seconds": 9.25},
        {"event": "TrainFinished", "step": 2000, "train_seconds": 12.0},
        {"event": "EvalDone", "step": 2000, "psnr": 24.0, "ssim": 0.9},
    ])
    evals = pc.eval_times(lines)
    assert evals == [(500, 3.0, 20.0), (1000, 6.5, 23.9), (1500, 9.25, 24.2), (2000, 12.0, 24.0)]
    assert pc.time_to_psnr(evals, 23.88) == (1000, 6.5, 23.9)
    assert pc.time_to_psnr(evals, 24.1) == (1500, 9.25, 24.2)
    assert pc.time_to_psnr(evals, 30.0) is None
    with pytest.raises(pc.CompareError, match="step 700"):
        pc.eval_times(_log([{"event": "EvalDone", "step": 700, "psnr": 20.0}]))


def test_summary_and_row(pc):
    ours = pc.Result(7000, 40.0, 24.5, 0.93, 100_000, 1.0)
    peer = pc.parse_peer(PEER_OUT)
    lines = pc.summary(ours, peer, (1000, 6.5, 23.9), ttq=True)
    assert lines[0].startswith("splatlab: 7000 steps, 40.0 s") and lines[1].startswith("peer    : 7000 steps, 74.9 s")
    assert "PSNR +0.62 dB" in lines[2] and "6.5 s of training (step 1000" in lines[3]
    row = pc.table_row("2026-12-02", "NVIDIA H200", "abc1234", "splatlab train beer --preset fast",
                       "bash .device/peer/run mcmc beer OUT 7000", ours, peer, None, ttq=True)
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert len(cells) == pc.HEADER.splitlines()[0].count("|") - 1
    assert cells[:3] == ["2026-12-02", "NVIDIA H200", "abc1234"] and cells[-2] == "not reached"


def test_insert_row_keeps_the_rest_of_results(pc):
    row1, row2 = "| r1 |\n", "| r2 |\n"
    base = "# Benchmark results\n\n## Training\n\n| a |\n|---|\n| x |\n"
    once = pc.insert_row(base, row1)
    assert once.startswith(base) and once.endswith(pc.HEADER + row1)
    # a later section stays after the table; the new row goes to the table's end
    later = once + "\n## Rendering\n\n| b |\n"
    twice = pc.insert_row(later, row2)
    assert twice == later.replace(pc.HEADER + row1, pc.HEADER + row1 + row2)
    assert pc.insert_row("", row1) .count(pc.SECTION) == 1
