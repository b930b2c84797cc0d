"""Scene loaders on generated fixtures (exact round trips, brute-force projection) and on
the shared captures when present (fox, lego, beer: headers and one image only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_dataset
from fixtures_scenes import (CX, CY, FX, FY, H, W, K_of, orbit_c2w, project, tree_digest, write_blender,
                             write_colmap, write_image, write_llff, write_transforms)

from splatlab.app.cli import main
from splatlab.scenes import find_format, images, load_scene
from splatlab.scenes.types import SceneError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))


def original_c2w(scene) -> np.ndarray:
    """Scene cameras mapped back to the dataset frame through its Normalization."""
    n = scene.normalization
    c2w = scene.cameras.camtoworlds.double().numpy()
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :3] = np.asarray(n.rotation).T @ c2w[:, :3, :3]
    out[:, :3, 3] = n.invert_points(c2w[:, :3, 3])
    return out


def project_scene(scene, i: int, x_orig: np.ndarray) -> np.ndarray:
    """Project dataset-frame points with the scene's own (normalized) camera i."""
    x = scene.normalization.apply_points(x_orig)
    return project(scene.cameras.camtoworlds[i].double().numpy(), scene.cameras.Ks()[i].double().numpy(), x)[0]


# ---- COLMAP -----------------------------------------------------------------------
@pytest.mark.parametrize("text", [False, True])
def test_colmap_roundtrip_and_projection(tmp_path, text):
    root = tmp_path / "cm"
    gt = write_colmap(root, n=10, text=text)
    before = tree_digest(root)
    s = load_scene(root)
    assert s.format == "colmap" and len(s.train_idx) == 8 and s.test_idx == [0, 8]
    np.testing.assert_allclose(original_c2w(s), gt["c2w"], atol=1e-5)
    assert np.allclose(np.asarray(s.normalization.rotation), np.eye(3))
    # normalized: camera centres around the origin within radius 1
    c = s.cameras.camtoworlds[:, :3, 3].double().numpy()
    assert np.linalg.norm(c.mean(0)) < 1e-5 and abs(np.linalg.norm(c, axis=1).max() - 1) < 1e-5
    def rows(a):
        return a[np.lexsort(a.T)]

    np.testing.assert_allclose(rows(s.normalization.invert_points(s.points)), rows(gt["points"][gt["observed"]]), atol=1e-9)
    for i in range(len(s.cameras)):
        np.testing.assert_allclose(project_scene(s, i, gt["points"]), project(gt["c2w"][i], gt["K"], gt["points"])[0], atol=2e-3)
    assert s.images[3].shape == (H, W, 3)
    assert tree_digest(root) == before


def test_colmap_points_project_where_observed(tmp_path):
    import pycolmap

    root = tmp_path / "cm"
    write_colmap(root, n=6)
    s = load_scene(root)
    rec = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    names = s.images.names
    for pid, p in rec.points3D.items():
        for el in p.track.elements:
            im = rec.images[el.image_id]
            i = names.index(im.name)
            uv = project_scene(s, i, np.asarray(p.xyz)[None])[0]
            np.testing.assert_allclose(uv, im.points2D[el.point2D_idx].xy, atol=1e-3)


def test_colmap_distorted_undistorts_into_cache_not_dataset(tmp_path):
    root = tmp_path / "cm"
    write_colmap(root, n=4, model="SIMPLE_RADIAL", params=[FX, CX, CY, 0.08])
    before = tree_digest(root)
    s = load_scene(root)
    assert s.cameras.model == "SIMPLE_RADIAL" and float(s.cameras.distortion[0, 0]) == pytest.approx(0.08)
    img = s.images[1]
    assert img.shape == (int(s.cameras.height[1]), int(s.cameras.width[1]), 3)
    assert list((tmp_path / "cache").rglob("*.png")), "undistorted image was not cached"
    s2 = load_scene(root)  # second load hits the cache and matches
    np.testing.assert_array_equal(s2.images[1], img)
    assert tree_digest(root) == before


def test_colmap_unsupported_model_and_no_registered_images(tmp_path):
    write_colmap(tmp_path / "a", n=3, model="FOV", params=[FX, FY, CX, CY, 0.1])
    with pytest.raises(SceneError, match="FOV is not supported"):
        load_scene(tmp_path / "a")
    write_colmap(tmp_path / "b", register=False)
    with pytest.raises(SceneError, match="no registered images") as e:
        load_scene(tmp_path / "b")
    assert "sparse" in str(e.value)


# ---- transforms.json ----------------------------------------------------------------
def test_nerfstudio_roundtrip_opengl_flip_and_missing_frames(tmp_path, capsys):
    gt = write_transforms(tmp_path, n=12, missing=3)
    s = load_scene(tmp_path)
    assert s.format == "nerfstudio" and len(s.cameras) == 9
    assert len(s.warnings) == 1 and "skipped 3 of 12" in s.warnings[0]
    assert capsys.readouterr().err.count("skipped 3 of 12") == 1
    np.testing.assert_allclose(original_c2w(s), gt["c2w"][:9], atol=1e-5)  # OpenGL -> OpenCV
    x = np.array([[1.0, -2.0, 0.5], [1.3, -1.8, 0.2]])
    for i in (0, 4):
        np.testing.assert_allclose(project_scene(s, i, x), project(gt["c2w"][i], gt["K"], x)[0], atol=2e-3)


def test_nerfstudio_per_frame_intrinsics_and_applied_transform(tmp_path):
    A = np.array([[0.0, 1, 0, 0.5], [1, 0, 0, -1], [0, 0, -1, 2]])
    gt = write_transforms(tmp_path, n=5, per_frame=True, applied_transform=A)
    s = load_scene(tmp_path)
    np.testing.assert_allclose(s.cameras.fx.numpy(), FX + np.arange(5), atol=1e-4)
    np.testing.assert_allclose(np.asarray(s.normalization.rotation), A[:, :3])
    np.testing.assert_allclose(original_c2w(s), gt["c2w"], atol=1e-5)  # back in the original frame


def test_nerfstudio_distortion_is_undistorted(tmp_path):
    write_transforms(tmp_path, n=3, distortion={"k1": 0.05, "k2": -0.01, "p1": 0.001, "p2": -0.001})
    s = load_scene(tmp_path)
    assert s.cameras.model == "OPENCV" and s.meta["source_sizes"][0] == [W, H]
    assert s.images[0].shape == (int(s.cameras.height[0]), int(s.cameras.width[0]), 3)


def test_distorted_scene_without_pycolmap_says_how_to_fix(tmp_path, monkeypatch, capsys):
    """pycolmap undistorts; where it is missing (a broken install) loading says so in one
    line with the fix, not a bare ModuleNotFoundError."""
    import sys

    write_transforms(tmp_path, n=3, distortion={"k1": 0.05, "k2": -0.01, "p1": 0.001, "p2": -0.001})
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` raise ImportError
    with pytest.raises(SceneError, match="OPENCV images needs pycolmap.*pip install pycolmap"):
        load_scene(tmp_path)
    assert main(["info", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install pycolmap" in err[0], err


@pytest.mark.parametrize("content,match", [("{not json", "invalid JSON"), ('{"frames": []}', "no frames"),
                                           ('{"fl_x": 3}', "no frames")])
def test_nerfstudio_bad_json(tmp_path, content, match):
    (tmp_path / "transforms.json").write_text(content)
    with pytest.raises(SceneError, match=match) as e:
        load_scene(tmp_path)
    assert "transforms.json" in str(e.value)


def test_nerfstudio_all_missing_and_nan_pose(tmp_path):
    write_transforms(tmp_path / "a", n=3, missing=3)
    with pytest.raises(SceneError, match="none of the 3 frames"):
        load_scene(tmp_path / "a")
    write_transforms(tmp_path / "b", n=3, nan_frame=1)
    with pytest.raises(SceneError, match="NaN/Inf") as e:
        load_scene(tmp_path / "b")
    assert "f_001.png" in str(e.value)


# ---- Blender, LLFF --------------------------------------------------------------------
def test_blender_split_and_white_background(tmp_path):
    gt = write_blender(tmp_path, n_train=4, n_test=3)
    s = load_scene(tmp_path)
    assert s.format == "blender" and s.train_idx == [0, 1, 2, 3] and s.test_idx == [4, 5, 6]
    assert s.background == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(original_c2w(s), np.concatenate([gt["train"], gt["test"]]), atol=1e-5)
    np.testing.assert_allclose(s.cameras.fx.numpy(), gt["fx"], rtol=1e-6)
    img = s.images[0]
    assert img.shape == (24, 24, 3) and (img[0, 0] == 255).all()  # transparent corner -> white
    s_black = load_scene(tmp_path, background=(0.0, 0.0, 0.0))
    assert (s_black.images[0][0, 0] == 0).all()


def test_llff_conversion(tmp_path):
    gt = write_llff(tmp_path, n=9)
    s = load_scene(tmp_path)
    assert s.format == "llff" and s.test_idx == [0, 8] and s.points is None
    np.testing.assert_allclose(original_c2w(s), gt["c2w"], atol=1e-5)
    x = np.array([[1.0, -2.0, 0.5]])
    np.testing.assert_allclose(project_scene(s, 3, x), project(gt["c2w"][3], gt["K"], x)[0], atol=2e-3)


def test_colmap_wins_over_llff_and_test_every(tmp_path):
    write_colmap(tmp_path, n=10)
    np.save(tmp_path / "poses_bounds.npy", np.zeros((10, 17)))
    s = load_scene(tmp_path, test_every=3)
    assert s.format == "colmap" and s.test_idx == [0, 3, 6, 9]
    assert load_scene(tmp_path, test_every=0).test_idx == []


# ---- downscale ------------------------------------------------------------------------
def test_downscale_prefers_complete_images_n_else_resizes(tmp_path):
    root = tmp_path / "cm"
    write_colmap(root, n=4)
    for k in range(4):
        write_image(root / "images_2" / f"img_{k:03d}.png", W // 2, H // 2, seed=50 + k)
    before = tree_digest(root)
    s = load_scene(root, downscale=2)
    assert s.meta["image_dir"].endswith("images_2") and s.meta["resize_on_load"] == 1
    assert float(s.cameras.fx[0]) == pytest.approx(FX / 2) and int(s.cameras.width[0]) == W // 2
    assert s.images[0].shape == (H // 2, W // 2, 3)
    (root / "images_2" / "img_003.png").unlink()  # partial copy: fall back to resizing
    before = tree_digest(root)
    s = load_scene(root, downscale=2)
    assert s.meta["image_dir"].endswith("images") and s.meta["resize_on_load"] == 2
    assert s.images[3].shape == (H // 2, W // 2, 3)
    assert list((tmp_path / "cache").rglob("*.png"))
    assert tree_digest(root) == before


# ---- bad input ------------------------------------------------------------------------
def test_image_size_mismatch_and_unreadable(tmp_path):
    root = tmp_path / "cm"
    write_colmap(root, n=3)
    write_image(root / "images" / "img_001.png", W + 2, H)
    with pytest.raises(SceneError, match="42x30 but its camera says 40x30") as e:
        load_scene(root)
    assert "img_001.png" in str(e.value)
    (root / "images" / "img_001.png").write_bytes(b"not an image")
    with pytest.raises(SceneError, match="cannot read image") as e:
        load_scene(root)
    assert "img_001.png" in str(e.value)
    (root / "images" / "img_001.png").unlink()
    with pytest.raises(SceneError, match="missing") as e:
        load_scene(root)
    assert "img_001.png" in str(e.value)


def test_bare_image_folder(tmp_path):
    for k in range(3):
        write_image(tmp_path / f"p{k}.jpg", seed=k)
    assert find_format(tmp_path) is images
    with pytest.raises(SceneError, match="splatlab process"):
        load_scene(tmp_path)
    assert images.describe(tmp_path)["num_images"] == 3


def _cli_error(argv, capsys, path) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    return err


def test_cli_bad_inputs_one_line_naming_the_file(tmp_path, capsys):
    _cli_error(["info", str(tmp_path / "nope")], capsys, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    _cli_error(["info", str(tmp_path / "empty")], capsys, tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "transforms.json").write_text("{oops")
    _cli_error(["info", str(tmp_path / "bad")], capsys, tmp_path / "bad" / "transforms.json")
    write_transforms(tmp_path / "nan", n=3, nan_frame=0)
    _cli_error(["info", str(tmp_path / "nan")], capsys, "f_000.png")
    write_colmap(tmp_path / "noreg", register=False)
    _cli_error(["info", str(tmp_path / "noreg")], capsys, tmp_path / "noreg" / "sparse" / "0")
    write_colmap(tmp_path / "size", n=2)
    write_image(tmp_path / "size" / "images" / "img_000.png", 10, 10)
    _cli_error(["info", str(tmp_path / "size")], capsys, tmp_path / "size" / "images" / "img_000.png")
    assert not (tmp_path / "cache").exists()  # nothing written


def test_cli_subprocess_no_traceback(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "info", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and str(tmp_path / "missing") in r.stderr


# ---- shared captures ------------------------------------------------------------------
def test_shared_fox():
    root = shared_dataset("fox")
    s = load_scene(root)
    assert s.format == "nerfstudio" and len(s.train_idx) + len(s.test_idx) == 50
    assert s.meta["source_sizes"][0] == [1080, 1920]
    assert len(s.warnings) == 1 and "17" in s.warnings[0]
    meta = json.loads((root / "transforms.json").read_text())
    fr = next(f for f in meta["frames"] if f["file_path"].endswith(s.images.names[5].split("/")[-1]))
    gl = np.asarray(fr["transform_matrix"])
    np.testing.assert_allclose(original_c2w(s)[5], gl @ np.diag([1.0, -1, -1, 1]), atol=1e-4)


def test_shared_lego():
    s = load_scene(shared_dataset("lego"))
    assert s.format == "blender" and (len(s.train_idx), len(s.test_idx)) == (100, 200)
    assert {tuple(x) for x in s.meta["source_sizes"]} == {(800, 800)}
    assert s.images[0].shape == (800, 800, 3)


def test_shared_beer_points_project_into_observing_images():
    import pycolmap

    root = shared_dataset("beer")
    s = load_scene(root)
    assert s.format == "colmap" and (len(s.train_idx), len(s.test_idx)) == (62, 9) and len(s.points) == 4414
    rec = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    names = s.images.names
    rng = np.random.default_rng(0)
    pids = rng.choice(list(rec.points3D.keys()), 200, replace=False)
    for pid in pids:
        p = rec.points3D[int(pid)]
        for el in p.track.elements:
            i = names.index(rec.images[el.image_id].name)
            uv = project_scene(s, i, np.asarray(p.xyz)[None])[0]
            # the observation, undistorted by COLMAP's own camera, through our pinhole K
            xy = rec.images[el.image_id].points2D[el.point2D_idx].xy
            n = rec.cameras[rec.images[el.image_id].camera_id].cam_from_img(np.asarray(xy)[None])[0]
            K = s.cameras.Ks()[i].double().numpy()
            obs = np.array([K[0, 0] * n[0] + K[0, 2], K[1, 1] * n[1] + K[1, 2]])
            assert np.linalg.norm(uv - obs) < 8.0  # beer's reprojection errors are ~0.75 px
    # beer's images_8 is partial (29 of 71): downscale 8 resizes the full images instead
    s8 = load_scene(root, downscale=8)
    assert s8.meta["image_dir"] == str(root / "images") and s8.meta["resize_on_load"] == 8
