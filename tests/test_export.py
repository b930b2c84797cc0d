"""`splatlab export`: every format through the CLI, original coordinates, crops, bad input."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch

from splatlab.app.cli import main
from splatlab.renderers.splat.io import read_ply
from splatlab.scenes.types import Normalization

from test_export_support import demo_model, demo_scene, random_rotation, write_run

NORM = Normalization(scale=0.5, translation=np.array([1.0, 2.0, -3.0]), rotation=random_rotation(7))


@pytest.fixture(scope="module")
def scene():
    return demo_scene(width=64, height=48, num_views=16, num_points=800)


@pytest.fixture(scope="module")
def run(tmp_path_factory, scene):
    return write_run(tmp_path_factory.mktemp("run") / "run", demo_model(scene), scene, normalization=NORM)


def cli(*args) -> int:
    return main(["export", *map(str, args)])


def test_help_lists_formats(capsys):
    assert cli("--help") == 0
    out = capsys.readouterr().out
    for f in ("ply", "splat", "ply-compressed", "points", "mesh", "cameras"):
        assert f"  {f} " in out
    with pytest.raises(SystemExit) as e:
        cli("--format", "points", "--help")
    assert e.value.code == 0
    assert "--min-opacity" in capsys.readouterr().out


def test_ply_export_is_in_original_coordinates(run, scene, tmp_path):
    assert cli(run, "--format", "ply", "--output", tmp_path / "a.ply") == 0
    m = read_ply(tmp_path / "a.ply")
    model = demo_model(scene)
    np.testing.assert_allclose(m.means.detach().numpy(), NORM.invert_points(model.means.detach().numpy()), atol=1e-5)
    np.testing.assert_allclose(m.splats["scales"].detach().numpy(),
                               model.splats["scales"].detach().numpy() - np.log(NORM.scale), atol=1e-5)
    # a PLY exported again from the PLY is unchanged (identity normalization)
    assert cli(tmp_path / "a.ply", "--format", "ply", "--output", tmp_path / "b.ply") == 0
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_viewer_crop_box_is_honoured(tmp_path, scene, capsys):
    """The crop box a user set in `splatlab view` (saved beside the run) applies to later
    exports unless --crop-* or --no-use-viewer-crop says otherwise."""
    import json

    run_dir = write_run(tmp_path / "run", demo_model(scene), scene, normalization=NORM)
    orig = NORM.invert_points(scene.points)
    lo, hi = np.percentile(orig, 25, axis=0), np.percentile(orig, 75, axis=0)
    (run_dir / "viewer_crop.json").write_text(json.dumps({
        "enabled": True, "frame": "normalized",
        "min": NORM.apply_points(lo[None])[0].tolist(), "max": NORM.apply_points(hi[None])[0].tolist(),
        "original": {"min": lo.tolist(), "max": hi.tolist()}}))
    assert cli(run_dir, "--format", "ply", "--output", tmp_path / "v.ply") == 0
    assert "viewer_crop.json" in capsys.readouterr().err
    m = read_ply(tmp_path / "v.ply").means.detach().numpy()
    assert 0 < len(m) < len(orig)
    assert (m >= lo - 1e-5).all() and (m <= hi + 1e-5).all()
    assert cli(run_dir, "--format", "ply", "--output", tmp_path / "all.ply", "--no-use-viewer-crop") == 0
    assert len(read_ply(tmp_path / "all.ply").means) == len(orig)


def test_crop_in_original_coordinates(run, scene, tmp_path, capsys):
    orig = NORM.invert_points(scene.points)
    lo, hi = np.percentile(orig, 20, axis=0), np.percentile(orig, 80, axis=0)
    assert cli(run, "--format", "ply", "--output", tmp_path / "c.ply",
               "--crop-min", *lo, "--crop-max", *hi) == 0
    m = read_ply(tmp_path / "c.ply").means.detach().numpy()
    assert 0 < len(m) < len(orig)
    assert (m >= lo - 1e-5).all() and (m <= hi + 1e-5).all()
    # empty box: one clear line, exit 2, nothing written
    assert cli(run, "--format", "ply", "--output", tmp_path / "e.ply",
               "--crop-min", 100, 100, 100, "--crop-max", 101, 101, 101) == 2
    err = capsys.readouterr().err
    assert "crop box" in err and "contains none" in err and err.count("\n") == 1
    assert not (tmp_path / "e.ply").exists()
    assert cli(run, "--format", "ply", "--output", tmp_path / "e.ply", "--crop-min", 1, 1, 1) == 2
    assert cli(run, "--format", "ply", "--output", tmp_path / "e.ply",
               "--crop-min", 1, 1, 1, "--crop-max", 0, 0, 0) == 2


def test_splat_and_compressed_via_gsplat(run, scene, tmp_path):
    assert cli(run, "--format", "splat", "--output", tmp_path / "a.splat") == 0
    raw = (tmp_path / "a.splat").read_bytes()
    n = len(scene.points)
    assert len(raw) == 32 * n
    xyz = np.frombuffer(raw, dtype="<f4").reshape(n, 8)[:, :3]
    want = NORM.invert_points(scene.points)
    # Morton-sorted: compare as sets via the sorted centre coordinates
    np.testing.assert_allclose(np.sort(xyz, axis=0), np.sort(want, axis=0), atol=1e-4)
    assert cli(run, "--format", "ply-compressed", "--output", tmp_path / "a.compressed.ply") == 0
    head = (tmp_path / "a.compressed.ply").read_bytes()[:2000]
    assert head.startswith(b"ply\nformat binary_little_endian 1.0\nelement chunk ")
    assert b"property uint packed_position" in head and b"property uchar f_rest_44" in head


def test_points(run, tmp_path):
    assert cli(run, "--format", "points", "--output", tmp_path / "p.ply", "--min-opacity", 0.5,
               "--max-size-percentile", 90) == 0
    raw = (tmp_path / "p.ply").read_bytes()
    head, body = raw.split(b"end_header\n")
    n = int(head.split(b"element vertex ")[1].split(b"\n")[0])
    assert b"property uchar red" in head
    rows = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    assert len(rows) == n and 0.85 * 800 <= n <= 0.91 * 800  # size filter drops ~10 %
    assert rows["rgb"].std() > 5
    assert cli(run, "--format", "points", "--output", tmp_path / "q.ply", "--min-opacity", 0.99) == 2


def test_cameras_transforms_json(run, scene, tmp_path):
    assert cli(run, "--format", "cameras", "--output", tmp_path / "transforms.json") == 0
    t = json.loads((tmp_path / "transforms.json").read_text())
    assert len(t["frames"]) == len(scene.cameras)
    assert len(t["train_filenames"]) == len(scene.train_idx) and len(t["test_filenames"]) == len(scene.test_idx)
    f = t["frames"][3]
    assert {"file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(f)
    M = np.asarray(f["transform_matrix"])
    c2w = scene.cameras.camtoworlds[3].double().numpy()
    # centre in original coordinates; OpenGL axes: -z looks forward, +y up
    np.testing.assert_allclose(M[:3, 3], NORM.invert_points(c2w[None, :3, 3])[0], atol=1e-5)
    R = np.asarray(NORM.rotation)
    np.testing.assert_allclose(-M[:3, 2], R.T @ c2w[:3, 2], atol=1e-6)
    np.testing.assert_allclose(M[:3, 1], -(R.T @ c2w[:3, 1]), atol=1e-6)
    assert f["w"] == 64 and f["h"] == 48


def test_bad_inputs_one_line(run, tmp_path, capsys):
    (tmp_path / "notrun").mkdir()
    cases = [
        (tmp_path / "missing", "ply", tmp_path / "x.ply", "no such run folder"),
        (tmp_path / "notrun", "ply", tmp_path / "x.ply", "not a splatlab run folder"),
        (run, "nope", tmp_path / "x.ply", "unknown export format"),
        (run, "ply", tmp_path / "x.splat", "suffix must be"),
        (run, "ply", tmp_path, "output is a folder"),
    ]
    for target, fmt, out, msg in cases:
        assert cli(target, "--format", fmt, "--output", out) == 2, msg
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert cli(run, "--format", "ply", "--output", ro / "x.ply") == 2
        assert "cannot write" in capsys.readouterr().err
    # a bare PLY has no cameras
    (tmp_path / "pts.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                                       b"property float x\nproperty float y\nproperty float z\nend_header\n"
                                       + struct.pack("<3f", 0, 0, 0))
    assert cli(tmp_path / "pts.ply", "--format", "ply", "--output", tmp_path / "y.ply") == 2
    assert "not a 3D Gaussian splatting PLY" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "x.ply").exists()


def test_unwritable_output_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    """A write that fails midway (disk full, permissions) leaves no half-written file."""
    import splatlab.scenes.files as files

    target = tmp_path / "full.ply"
    def full_disk(fd, mode):
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", full_disk)
    assert cli(run, "--format", "ply", "--output", target) == 2
    assert "No space left" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_original_coordinates_on_beer(tmp_path):
    """A short real training run on beer (CPU, 1/8 resolution): its splat.ply (written in
    the dataset's original frame) lies where pycolmap says the COLMAP points are: median
    centre within 10% of the scene extent of the median COLMAP point."""
    import dataclasses

    import pycolmap
    from conftest import shared_dataset

    from splatlab.app.config import preset
    from splatlab.app.train import train
    from splatlab.scenes import load_scene

    root = shared_dataset("beer")
    cfg = dataclasses.replace(preset("cpu"), data=str(root), downscale=8, steps=120,
                              output=str(tmp_path / "run"), save_renders=False)
    train(cfg)
    got = read_ply(tmp_path / "run" / "splat.ply").means.detach().double().numpy()
    rec = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    pts = np.array([p.xyz for p in rec.points3D.values()])
    extent = np.linalg.norm(pts.max(0) - pts.min(0))
    assert np.linalg.norm(np.median(got, 0) - np.median(pts, 0)) <= 0.1 * extent
    # not the identity by accident: training ran in a frame centred on the cameras
    assert not np.allclose(load_scene(root, downscale=8).normalization.matrix(), np.eye(4))
