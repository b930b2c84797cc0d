"""`splatlab render`: MP4 / PNG output with the requested frames and size, camera paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splatlab.app import camera_paths
from splatlab.app.cli import main

from test_export_support import demo_model, demo_scene, write_run


@pytest.fixture(scope="module")
def scene():
    return demo_scene(width=64, height=48, num_views=12, num_points=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory, scene):
    return write_run(tmp_path_factory.mktemp("run") / "run", demo_model(scene, sh_degree=1), scene)


def test_orbit_mp4_has_requested_frames_and_size(run, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg (splatlab[video])")
    import imageio.v3 as iio

    out = tmp_path / "orbit.mp4"
    assert main(["render", str(run), "--path", "orbit", "--output", str(out),
                 "--frames", "5", "--width", "48", "--height", "32", "--fps", "10"]) == 0
    frames = np.stack(list(iio.imiter(out)))
    assert frames.shape == (5, 32, 48, 3)
    assert frames.std() > 5  # not blank
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interpolate_png_folder(run, tmp_path):
    import imageio.v2 as imageio

    out = tmp_path / "frames"
    assert main(["render", str(run), "--path", "interpolate", "--output", str(out), "--frames", "3"]) == 0
    pngs = sorted(out.glob("frame_*.png"))
    assert len(pngs) == 3 and imageio.imread(pngs[0]).shape == (48, 64, 3)


def test_orbit_geometry(scene):
    cams = scene.cameras
    path = camera_paths.orbit(cams, 8)
    c2w = path.camtoworlds.double().numpy()
    centre = camera_paths.focus_point(cams.camtoworlds.double().numpy())
    np.testing.assert_allclose(centre, [0.0, 0.0, 0.3], atol=1e-3)  # the demo's look-at point
    # at the cameras' mean height (the mean up vector of 12 spiral views is within ~1 degree of +z)
    np.testing.assert_allclose(c2w[:, 2, 3].mean(), cams.camtoworlds[:, 2, 3].double().mean(), atol=0.05)
    fwd = centre - c2w[:, :3, 3]
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("ni,ni->n", fwd, c2w[:, :3, 2]), 1.0, atol=1e-6)


def test_interpolate_passes_through_cameras(scene):
    cams = scene.cameras[[0, 1, 2]]
    path = camera_paths.interpolate(cams, 5)  # frames 0, 2, 4 sit on the keys
    for k, i in [(0, 0), (2, 1), (4, 2)]:
        torch.testing.assert_close(path.camtoworlds[k], cams.camtoworlds[i], atol=1e-5, rtol=0)


def test_json_path_round_trips_a_training_camera(run, scene, tmp_path):
    import imageio.v2 as imageio

    i = scene.train_idx[0]
    c2w = scene.cameras.camtoworlds[i].double().numpy().tolist()
    f = float(scene.cameras.fx[i])
    (tmp_path / "p.json").write_text(json.dumps({"width": 64, "height": 48, "frames": [
        {"camtoworld": c2w, "fx": f, "fy": f, "cx": 32.0, "cy": 24.0}]}))
    out = tmp_path / "j"
    assert main(["render", str(run), "--path", str(tmp_path / "p.json"), "--output", str(out)]) == 0
    got = imageio.imread(out / "frame_00000.png").astype(np.float32)
    from splatlab.app.runs import load_target
    from test_export_support import render

    ref = render(load_target(run).model, scene.cameras[[i]], scene.background)[0].numpy() * 255
    assert np.abs(got - ref).max() <= 1.0


def test_render_bad_inputs(run, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "nof.json").write_text(json.dumps({"frames": [{"camtoworld": [[1, 0], [0, 1]]}]}))
    cases = [
        (["--path", "spiral"], "--path must be"),
        (["--path", str(tmp_path / "bad.json")], "invalid JSON"),
        (["--path", str(tmp_path / "nof.json")], "frame 0"),
        (["--path", "orbit", "--frames", "0"], "--frames must be"),
    ]
    for extra, msg in cases:
        assert main(["render", str(run), "--output", str(tmp_path / "o.mp4"), *extra]) == 2, msg
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert main(["render", str(tmp_path / "nope"), "--output", str(tmp_path / "o.mp4")]) == 2
    assert not (tmp_path / "o.mp4").exists()
