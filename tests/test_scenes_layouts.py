"""Data as it comes (issue 14): COLMAP pipeline layouts found from their root, `format=`,
`images=`, `colmap_path=` (and `splatlab info --format/--images/--colmap-path`), scene names
from the scene rather than the last path component, and nerfstudio's `mask_path`,
`depth_file_path`, `OPENCV_FISHEYE` and split lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_scenes import (CX, CY, FX, FY, H, W, project, tree_digest, write_colmap, write_colmap_pipeline,
                             write_nerfstudio_colmap, write_transforms)
from PIL import Image

from splatlab.app.cli import main
from splatlab.scenes import load_scene
from splatlab.scenes.types import SceneError
from test_scenes import original_c2w  # the one brute-force map back to the dataset frame


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))


# ---- COLMAP pipeline layouts ----------------------------------------------------------
def test_colmap_pipeline_folder_loads_from_its_root_and_from_distorted(tmp_path):
    root = tmp_path / "room"
    gt = write_colmap_pipeline(root, n=6)
    before = tree_digest(root)
    s = load_scene(root)
    assert s.format == "colmap" and s.meta["layout"] == "dense/0" and s.name == "room"
    assert s.meta["image_dir"] == str(root / "dense" / "0" / "images") and s.cameras.model == "PINHOLE"
    np.testing.assert_allclose(original_c2w(s), gt["dense"]["c2w"], atol=1e-5)
    assert s.images[2].shape == (H, W, 3)
    # distorted/: its model is in sparse/0 and its photos in ../input
    d = load_scene(root / "distorted")
    assert d.meta["layout"] == "sparse/0" and d.meta["image_dir"] == str(root / "input")
    assert d.cameras.model == "OPENCV" and d.name == "room"
    np.testing.assert_allclose(original_c2w(d), gt["distorted"]["c2w"], atol=1e-5)
    # dense/0 itself: sparse/ directly holds the model
    d0 = load_scene(root / "dense" / "0")
    assert d0.meta["layout"] == "sparse" and d0.name == "room" and len(d0.cameras) == 6
    assert tree_digest(root) == before


def test_distorted_model_alone_uses_input(tmp_path):
    root = tmp_path / "cap"
    write_colmap(root, n=5, image_dir="input", model_dir="distorted/sparse/0")
    s = load_scene(root)
    assert s.meta["layout"] == "distorted/sparse/0 + input/" and s.meta["image_dir"] == str(root / "input")


def test_nerfstudio_colmap_output(tmp_path):
    root = tmp_path / "garden"
    gt = write_nerfstudio_colmap(root, n=6)
    s = load_scene(root)
    assert s.format == "colmap" and s.meta["layout"] == "colmap/sparse/0" and s.name == "garden"
    np.testing.assert_allclose(original_c2w(s), gt["c2w"], atol=1e-5)
    # with its transforms.json beside it, nerfstudio's file is read; format= forces COLMAP
    write_transforms(root, n=4)
    assert load_scene(root).format == "nerfstudio"
    forced = load_scene(root, format="colmap")
    assert forced.format == "colmap" and forced.meta["layout"] == "colmap/sparse/0" and len(forced.cameras) == 6


def test_colmap_path_and_images_arguments(tmp_path):
    root = tmp_path / "room"
    gt = write_colmap_pipeline(root, n=6)
    s = load_scene(root, colmap_path="distorted/sparse/0", images="input")  # relative to the scene folder
    assert s.format == "colmap" and s.cameras.model == "OPENCV" and s.meta["image_dir"] == str(root / "input")
    np.testing.assert_allclose(original_c2w(s), gt["distorted"]["c2w"], atol=1e-5)
    assert s.meta["load_args"] == {"format": "colmap", "images": "input", "colmap_path": "distorted/sparse/0"}
    s = load_scene(root, colmap_path=root / "distorted" / "sparse")  # .../sparse is taken as sparse/0
    assert s.meta["model_dir"] == str(root / "distorted" / "sparse" / "0")
    with pytest.raises(SceneError, match="no COLMAP model") as e:
        load_scene(root, colmap_path="input")
    assert str(root / "input") in str(e.value)
    with pytest.raises(SceneError, match="--images: no such folder"):
        load_scene(root, images="nope")
    with pytest.raises(SceneError, match="unknown format 'colmop'"):
        load_scene(root, format="colmop")
    with pytest.raises(SceneError, match="poses_bounds.npy"):
        load_scene(root, format="llff")  # forced: no fallback to COLMAP
    write_transforms(tmp_path / "ns", n=3)
    with pytest.raises(SceneError, match="--images applies to COLMAP and LLFF"):
        load_scene(tmp_path / "ns", images="images")


def test_info_flags_and_layout(tmp_path, capsys):
    root = tmp_path / "room"
    write_colmap_pipeline(root, n=6)
    before = tree_digest(root)
    assert main(["info", str(root), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["layout"] == "dense/0" and d["name"] == "room" and d["num_images"] == 6
    assert main(["info", str(root), "--json", "--colmap-path", "distorted/sparse/0", "--images", "input"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["camera_model"] == "OPENCV" and d["image_dir"] == str(root / "input")
    assert main(["info", str(root), "--format", "colmap"]) == 0
    out = capsys.readouterr().out
    assert "layout" in out and "dense/0" in out
    assert main(["info", str(root), "--format", "blender"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "transforms_train.json" in err
    assert tree_digest(root) == before and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("sub,name", [("room/dense/0", "room"), ("room/sparse", "room"), ("kitchen", "kitchen"),
                                      ("my_scene/colmap/images_4", "my_scene")])
def test_scene_name_skips_generic_folders(tmp_path, sub, name):
    from splatlab.scenes.common import scene_name

    assert scene_name(tmp_path / sub) == name


# ---- nerfstudio keys ---------------------------------------------------------------------
def _edit(root, fn) -> None:
    meta = json.loads((root / "transforms.json").read_text())
    fn(meta)
    (root / "transforms.json").write_text(json.dumps(meta))


def _mask(path, w=W, h=H, seed=0) -> np.ndarray:
    m = (np.random.default_rng(seed).random((h, w)) > 0.5).astype(np.uint8) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return m


def test_nerfstudio_masks_depths_and_split_lists(tmp_path):
    write_transforms(tmp_path, n=6)
    truth = {f"images/f_{k:03d}.png": _mask(tmp_path / "masks" / f"m_{k:03d}.png", seed=k) for k in range(6)}

    def add(meta):
        for k, fr in enumerate(meta["frames"]):
            fr["mask_path"] = f"masks/m_{k:03d}.png"
            fr["depth_file_path"] = f"depths/d_{k:03d}.npy"  # recorded, never read
        meta["val_filenames"] = ["images/f_001.png", "./images/f_004.png"]

    _edit(tmp_path, add)
    s = load_scene(tmp_path)
    assert s.images.has_masks and s.test_idx == [1, 4] and s.train_idx == [0, 2, 3, 5]
    for i, name in enumerate(s.images.names):
        np.testing.assert_array_equal(s.images.mask(i), truth[name])
    assert s.meta["depth_files"][3] == str(tmp_path / "depths" / "d_003.npy")
    # train_filenames/test_filenames win over val_filenames
    _edit(tmp_path, lambda m: m.update(train_filenames=["images/f_000.png", "images/f_002.png"],
                                       test_filenames=["images/f_005.png"]))
    s = load_scene(tmp_path)
    assert s.train_idx == [0, 2] and s.test_idx == [5]
    # a mask of the wrong size names the mask file
    _mask(tmp_path / "masks" / "m_002.png", W + 4, H)
    with pytest.raises(SceneError, match=f"mask is {W + 4}x{H} but its image f_002.png is {W}x{H}") as e:
        load_scene(tmp_path)
    assert "m_002.png" in str(e.value)
    (tmp_path / "masks" / "m_002.png").unlink()
    with pytest.raises(SceneError, match="mask file is missing"):
        load_scene(tmp_path)


def test_masks_follow_undistortion_and_downscale(tmp_path):
    write_transforms(tmp_path, n=3, distortion={"k1": 0.05, "p1": 0.001})
    for k in range(3):
        _mask(tmp_path / "masks" / f"f_{k:03d}.png", seed=k)
    _edit(tmp_path, lambda m: [fr.update(mask_path=f"masks/f_{k:03d}.png") for k, fr in enumerate(m["frames"])])
    s = load_scene(tmp_path, downscale=2)
    for i in range(3):
        assert s.images.mask(i).shape == s.images[i].shape[:2]


def test_colmap_masks_folder(tmp_path, capsys):
    write_colmap(tmp_path, n=4)
    truth = {f"img_{k:03d}.png": _mask(tmp_path / "masks" / f"img_{k:03d}.png.png", seed=k) for k in range(4)}
    s = load_scene(tmp_path)
    assert s.meta["masks"] == str(tmp_path / "masks")
    for i, name in enumerate(s.images.names):
        np.testing.assert_array_equal(s.images.mask(i), truth[name])
    # a mask of another size than its image: one error line naming the mask file, from the CLI too
    _mask(tmp_path / "masks" / "img_001.png.png", W, H - 6)
    with pytest.raises(SceneError, match=f"mask is {W}x{H - 6} but its image img_001.png is {W}x{H}"):
        load_scene(tmp_path)
    capsys.readouterr()
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and str(tmp_path / "masks" / "img_001.png.png") in err and "mask is" in err
    _mask(tmp_path / "masks" / "img_001.png.png", seed=1)
    (tmp_path / "masks" / "img_002.png.png").unlink()
    with pytest.raises(SceneError, match="1 of 4 images have no mask"):
        load_scene(tmp_path)


def test_opencv_fisheye_is_undistorted_to_pinhole(tmp_path):
    """The pixel a 3D point lands on in the undistorted (pinhole) image shows what the
    fisheye image showed where COLMAP's OPENCV_FISHEYE model projects the same point."""
    import pycolmap

    k = [0.05, -0.02, 0.004, -0.001]
    write_transforms(tmp_path, n=3)
    # smooth images whose colour encodes the source pixel position
    yy, xx = np.mgrid[0:H, 0:W]
    grad = np.stack([xx * 255 / (W - 1), yy * 255 / (H - 1), np.full_like(xx, 128)], -1).astype(np.uint8)
    for j in range(3):
        Image.fromarray(grad).save(tmp_path / "images" / f"f_{j:03d}.png")
    _edit(tmp_path, lambda m: m.update(camera_model="OPENCV_FISHEYE", k1=k[0], k2=k[1], k3=k[2], k4=k[3]))
    s = load_scene(tmp_path)
    assert s.cameras.model == "OPENCV_FISHEYE"
    img = s.images[0].astype(np.float64)
    assert img.shape == (int(s.cameras.height[0]), int(s.cameras.width[0]), 3)
    fish = pycolmap.Camera(model="OPENCV_FISHEYE", width=W, height=H, params=[FX, FY, CX, CY, *k])
    K = s.cameras.Ks()[0].double().numpy()
    rng = np.random.default_rng(0)
    xc = np.concatenate([rng.uniform(-0.15, 0.15, (40, 2)), np.ones((40, 1))], 1)  # camera-frame points
    uv_pin = project(np.eye(4), K, xc)[0]
    uv_fish = np.asarray(fish.img_from_cam(xc))
    inside = (uv_pin[:, 0] > 1) & (uv_pin[:, 0] < img.shape[1] - 2) & (uv_pin[:, 1] > 1) & (uv_pin[:, 1] < img.shape[0] - 2)
    assert inside.sum() > 20
    px = np.floor(uv_pin[inside]).astype(int)
    seen = img[px[:, 1], px[:, 0], :2]
    expected = np.stack([(uv_fish[inside, 0] - 0.5) * 255 / (W - 1), (uv_fish[inside, 1] - 0.5) * 255 / (H - 1)], 1)
    # one pixel of colour gradient is ~6.5 (x) / ~8.8 (y) levels; nearest-pixel sampling costs up to one
    assert np.abs(seen - expected).max() < 14


def test_colmap_opencv_fisheye(tmp_path):
    k = [0.05, -0.02, 0.004, -0.001]
    write_colmap(tmp_path, n=4, model="OPENCV_FISHEYE", params=[FX, FY, CX, CY, *k])
    s = load_scene(tmp_path)
    assert s.cameras.model == "OPENCV_FISHEYE" and s.cameras.distortion[0, :4].tolist() == pytest.approx(k)
    assert s.images[1].shape == (int(s.cameras.height[1]), int(s.cameras.width[1]), 3)
