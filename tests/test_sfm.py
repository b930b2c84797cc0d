"""scenes/capture/sfm.py strategy choices and scenes/capture/video.py frame selection (fast, no SfM)."""

from __future__ import annotations

import numpy as np
import pytest

from splatlab.scenes.capture.sfm import EXHAUSTIVE_MAX_IMAGES, SfmOptions, choose_matcher, plan
from splatlab.scenes.capture.video import extract_frames, sharpness


def test_matcher_choice():
    assert choose_matcher(SfmOptions(), 10) == "exhaustive"
    assert choose_matcher(SfmOptions(), EXHAUSTIVE_MAX_IMAGES) == "exhaustive"
    assert choose_matcher(SfmOptions(), EXHAUSTIVE_MAX_IMAGES + 1) == "sequential"
    assert choose_matcher(SfmOptions(ordered=True), 20) == "sequential"
    assert choose_matcher(SfmOptions(matcher="exhaustive", ordered=True), 500) == "exhaustive"


def test_mapper_plan_falls_back_to_the_other_mapper_then_relaxed_options():
    assert plan("auto") == ["global", "incremental", "incremental-relaxed", "global-relaxed"]
    assert plan("global") == ["global", "global-relaxed"]
    assert plan("incremental") == ["incremental", "incremental-relaxed"]


def _pattern(rng, h=96, w=128):
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _blur(im, k=9):
    x = im.astype(np.float32)
    for axis in (0, 1):
        x = sum(np.roll(x, s, axis=axis) for s in range(-(k // 2), k // 2 + 1)) / k
    return x.astype(np.uint8)


def test_sharpness_prefers_sharp_frames():
    rng = np.random.default_rng(0)
    im = _pattern(rng)
    assert sharpness(im) > 5 * sharpness(_blur(im))


def test_extract_frames_keeps_the_sharpest_of_each_window(tmp_path):
    iio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    rng = np.random.default_rng(1)
    frames = []
    for w in range(5):  # 5 windows of 6 frames, only the 4th frame of each is sharp
        im = np.kron(_pattern(rng, 24, 32), np.ones((4, 4, 1), np.uint8))
        frames += [im if i == 3 else _blur(im, 15) for i in range(6)]
    video = tmp_path / "v.mp4"
    with iio.get_writer(video, fps=10, codec="libx264", quality=9, macro_block_size=16) as wr:
        for f in frames:
            wr.append_data(f)
    out = extract_frames(video, tmp_path / "frames", 5)
    assert [p.name for p in out] == [f"frame_{i:05d}.jpg" for i in range(1, 6)]
    from PIL import Image

    sharp = [sharpness(np.asarray(Image.open(p))) for p in out]
    blurred = sharpness(_blur(frames[3], 15))
    assert min(sharp) > 3 * blurred
    # Fewer frames in the video than asked for: every frame, once.
    assert len(extract_frames(video, tmp_path / "all", 100)) == 30
