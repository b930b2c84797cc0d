"""benchmarks/nerf_bench.py: the time-to-quality curve read from a real run's log, the
first time a target is reached, and the Blender subset it writes for the GPU machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import nerf_bench  # noqa: E402


def test_curve_pairs_each_evaluation_with_the_training_seconds_before_it(tmp_path):
    log = tmp_path / "log.jsonl"
    events = [{"event": "TrainStarted"},
              {"event": "StepDone", "step": 100, "train_seconds": 1.5},
              {"event": "StepDone", "step": 200, "train_seconds": 3.0},
              {"event": "EvalDone", "step": 200, "psnr": 20.0},
              {"event": "StepDone", "step": 300, "train_seconds": 4.5},
              {"event": "EvalDone", "step": 350, "psnr": 24.0},  # between log steps: the one before
              {"event": "EvalDone", "step": 350, "psnr": 24.5},  # the final evaluation of that step wins
              {"event": "EvalDone", "step": 400, "psnr": None}]  # no test views: skipped
    log.write_text("\n".join(json.dumps(e) for e in events))
    points = nerf_bench.curve(log)
    assert points == [(200, 3.0, 20.0), (350, 4.5, 24.5)]
    assert nerf_bench.first_reaching(points, 20.0) == (200, 3.0)
    assert nerf_bench.first_reaching(points, 22.0) == (350, 4.5)
    assert nerf_bench.first_reaching(points, 30.0) is None


def _blender(root: Path, n_train: int, n_test: int) -> None:
    import imageio.v3 as iio

    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        frames = []
        for i in range(n):
            iio.imwrite(root / split / f"r_{i}.png", np.full((4, 4, 4), i, np.uint8))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": np.eye(4).tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))


def test_write_subset_keeps_all_training_frames_and_every_nth_test_frame(tmp_path):
    src, dst = tmp_path / "lego", tmp_path / "sub"
    _blender(src, 3, 25)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    assert nerf_bench.write_subset(src, dst, 10) == 3
    test = json.loads((dst / "transforms_test.json").read_text())
    assert [f["file_path"] for f in test["frames"]] == ["./test/r_0", "./test/r_10", "./test/r_20"]
    assert test["camera_angle_x"] == 0.7
    assert sorted(p.name for p in (dst / "test").iterdir()) == ["r_0.png", "r_10.png", "r_20.png"]
    assert len(json.loads((dst / "transforms_train.json").read_text())["frames"]) == 3
    assert len(list((dst / "train").iterdir())) == 3
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # the source is untouched
    with pytest.raises(SystemExit, match="not empty"):
        nerf_bench.write_subset(src, dst, 10)
    with pytest.raises(SystemExit, match="inside the source"):
        nerf_bench.write_subset(src, src / "sub", 10)


def test_a_short_demo_run_gives_a_rising_curve(tmp_path, capsys):
    rc = nerf_bench.main(["--data", "demo", "--preset", "cpu", "--eval-every", "20", "--target", "5",
                          "--target", "99", "--no-record", "--output", str(tmp_path), "--",
                          "--steps", "40", "--downscale", "8", "--rays-per-batch", "256", "--log-every", "10",
                          "--proposal-samples-1", "16", "--proposal-samples-2", "8", "--nerf-samples", "8",
                          "--no-save-renders"])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    points = nerf_bench.curve(run / "log.jsonl")
    assert [s for s, _, _ in points] == [20, 40]
    assert 0 < points[0][1] < points[1][1]
    assert points[1][2] == pytest.approx(json.loads((run / "metrics.json").read_text())["psnr"])
    out = capsys.readouterr().out
    assert "5.00 dB: step 20" in out and "99.00 dB: not reached" in out


def test_probe_reports_a_field_at_the_density_cap():
    import dataclasses

    import torch

    import nerf_probe
    from splatlab.renderers.nerf import PRESETS, NerfRenderer
    from splatlab.scenes import demo

    scene = demo.load(None, width=24, height=18, num_views=6, num_points=200)
    cfg = dataclasses.replace(PRESETS["cpu"][1], hash_levels=4, hash_log2_size=10, max_resolution=32,
                              proposal_levels=2, proposal_log2_size=8, hidden_dim=16, color_hidden_dim=16)
    r = NerfRenderer.build(scene, cfg, "cpu")
    fresh = nerf_probe.probe(r, points=2000)
    assert fresh["field"]["at the cap"] == 0 and fresh["field"]["density max"] < 10  # e^(~0 - 1) at init
    with torch.no_grad():
        r.field.density_mlp[-1].bias[0] = 100.0  # pre-activation far above the cap everywhere
    ruined = nerf_probe.probe(r, points=2000)
    assert ruined["field"]["at the cap"] == 1.0 and ruined["field"]["density min"] >= torch.e ** 29
    assert ruined["proposal 1"] == fresh["proposal 1"]  # the proposals were not touched
