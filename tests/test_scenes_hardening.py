"""Hostile scene inputs (issue 13, items 6, 8, 9, 10, 11): each gives one clean line naming the
file and the problem, exit 2, bounded time, and nothing written; subprocess tests where the
command line is the point."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_scenes import tree_digest, write_colmap, write_image, write_llff, write_transforms

from splatlab.app.cli import main
from splatlab.scenes import load_scene
from splatlab.scenes.types import SceneError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))


def cli(path: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`splatlab info PATH` in a fresh process, with the cache inside the test's folder."""
    import os

    env = dict(os.environ, SPLATLAB_CACHE=str(path.parent / "cache"))
    return subprocess.run([sys.executable, "-m", "splatlab.app.cli", "info", str(path), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_clean(r: subprocess.CompletedProcess, *names: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in err, (n, err)
    return err


def in_process(argv: list[str], capsys, *names: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (rc, err)
    for n in names:
        assert n in err, (n, err)
    return err


# ---- item 6: corrupt COLMAP models never reach pycolmap ---------------------------------------
def _set(p: Path, off: int, fmt: str, value) -> None:
    b = bytearray(p.read_bytes())
    struct.pack_into(fmt, b, off, value)
    p.write_bytes(bytes(b))


def _count(p: Path) -> int:
    return struct.unpack_from("<Q", p.read_bytes())[0]


CORRUPTIONS = {
    "empty points3D.bin": ("points3D.bin", lambda p: p.write_bytes(b""), "the number of points runs past the end"),
    "point count + 1": ("points3D.bin", lambda p: _set(p, 0, "<Q", _count(p) + 1), "runs past the end"),
    "point count - 1": ("points3D.bin", lambda p: _set(p, 0, "<Q", _count(p) - 1), "bytes after the last record"),
    "7-byte images.bin": ("images.bin", lambda p: p.write_bytes(b"\x01" * 7), "runs past the end"),
    "huge camera count": ("cameras.bin", lambda p: _set(p, 0, "<Q", 1 << 62), "fit at most"),
    "huge 2D point count": ("images.bin", lambda p: _set(p, 8 + 4 + 56 + 4 + len(b"img_000.png\0"), "<Q", 1 << 40),
                            "fit at most"),
    "huge track": ("points3D.bin", lambda p: _set(p, 8 + 8 + 24 + 3 + 8, "<Q", (1 << 64) - 1), "room for at most"),
    "random bytes": ("points3D.bin", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "points3D.bin"),
    "unknown camera model": ("cameras.bin", lambda p: _set(p, 12, "<i", 99), "unknown camera model id 99"),
    "dangling camera": ("images.bin", lambda p: _set(p, 8 + 4 + 56, "<I", 77), "names camera 77"),
    "NaN pose": ("images.bin", lambda p: _set(p, 8 + 4, "<d", float("nan")), "non-finite or zero pose"),
    "NaN point": ("points3D.bin", lambda p: _set(p, 16, "<d", float("nan")), "non-finite position"),
    "dangling track": ("points3D.bin", lambda p: _set(p, 8 + 8 + 24 + 3 + 8 + 8, "<I", 999), "names image 999"),
    "huge frame count": ("frames.bin", lambda p: _set(p, 0, "<Q", 1 << 40), "frames"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_colmap_binary_one_line(tmp_path, capsys, case):
    root = tmp_path / "scene"
    write_colmap(root, n=4)
    fname, corrupt, match = CORRUPTIONS[case]
    corrupt(root / "sparse" / "0" / fname)
    before = tree_digest(root)
    t = time.perf_counter()
    err = in_process(["info", str(root)], capsys, str(root / "sparse" / "0" / fname))
    assert match in err and time.perf_counter() - t < 5
    assert tree_digest(root) == before and not (tmp_path / "cache").exists()


def test_corrupt_colmap_subprocess(tmp_path):
    """The command line of the report: `splatlab info` on a raised point count and on a 7-byte
    images.bin answers at once with one line (pycolmap ran for minutes and gigabytes)."""
    root = tmp_path / "scene"
    write_colmap(root, n=4)
    pts = root / "sparse" / "0" / "points3D.bin"
    _set(pts, 0, "<Q", _count(pts) + 1)
    before = tree_digest(root)
    assert_clean(cli(root, timeout=60), str(pts), "runs past the end")
    assert tree_digest(root) == before
    (root / "sparse" / "0" / "images.bin").write_bytes(b"\x01" * 7)
    before = tree_digest(root)
    assert_clean(cli(root, timeout=60), str(root / "sparse" / "0" / "images.bin"))
    assert tree_digest(root) == before and not (tmp_path / "cache").exists()


TEXT_CORRUPTIONS = {
    "cameras.txt": ("1 PINHOLE 40 30 36 35\n", "has 2 parameters, expected 4"),
    "images.txt": ("1 1 0 0 0 0 0 0 1 a.png\n1 2\n", "2D points come in triples"),
    "points3D.txt": ("1 0 0 nan 1 2 3 0.5 1 0\n", "non-finite position"),
}


@pytest.mark.parametrize("fname", list(TEXT_CORRUPTIONS))
def test_corrupt_colmap_text_one_line(tmp_path, fname):
    write_colmap(tmp_path, n=3, text=True)
    content, match = TEXT_CORRUPTIONS[fname]
    (tmp_path / "sparse" / "0" / fname).write_text(content)
    with pytest.raises(SceneError, match=match) as e:
        load_scene(tmp_path)
    assert e.value.path == tmp_path / "sparse" / "0" / fname


# ---- item 8 (load side): cameras and initial points are checked at load -----------------------
def _edit(root: Path, fn) -> None:
    meta = json.loads((root / "transforms.json").read_text())
    fn(meta)
    (root / "transforms.json").write_text(json.dumps(meta, allow_nan=True))


def _same_pose(meta):
    for fr in meta["frames"]:
        fr["transform_matrix"] = meta["frames"][0]["transform_matrix"]


def _scaled_rotation(meta):
    m = np.asarray(meta["frames"][1]["transform_matrix"])
    m[:3, :3] *= 3
    meta["frames"][1]["transform_matrix"] = m.tolist()


def _nan_points(meta):
    meta["ply_file_path"] = "points.ply"


CAMERA_CASES = {
    "identical poses": (_same_pose, "all 5 cameras are at the same position"),
    "NaN pose": (lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(3, float("nan")), "NaN/Inf"),
    "fl_x 1e300": (lambda m: m.update(fl_x=1e300), "bad intrinsics"),
    "focal 0": (lambda m: m.update(fl_x=0.0, fl_y=0.0), "bad intrinsics"),
    "scaled rotation": (_scaled_rotation, "not a rotation"),
    "NaN initial points": (_nan_points, "initial points are not finite"),
}


@pytest.mark.parametrize("case", list(CAMERA_CASES))
def test_bad_cameras_and_points_refused_at_load(tmp_path, capsys, case):
    from plyfile import PlyData, PlyElement

    write_transforms(tmp_path, n=5)
    pts = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    pts["x"][1] = np.nan
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "points.ply"))
    fn, match = CAMERA_CASES[case]
    _edit(tmp_path, fn)
    before = tree_digest(tmp_path)
    err = in_process(["info", str(tmp_path)], capsys)
    assert match in err and ("points.ply" in err if "points" in case else "transforms.json" in err)
    assert tree_digest(tmp_path) == before


def test_identical_poses_subprocess(tmp_path):
    root = tmp_path / "scene"
    write_transforms(root, n=5)
    _edit(root, _same_pose)
    assert_clean(cli(root), str(root / "transforms.json"), "same position")


# ---- item 9: malformed scene inputs ---------------------------------------------------------
def _deep(root: Path) -> None:
    (root / "transforms.json").write_text("[" * 100_000 + "]" * 100_000)


JSON_CASES = {
    "nested 100000 deep": (_deep, "nested too deeply"),
    "fl_x sixty": (lambda r: _edit(r, lambda m: m.update(fl_x="sixty")), 'fl_x is "sixty"'),
    "NUL in file_path": (lambda r: _edit(r, lambda m: m["frames"][1].update(file_path="images/a\0b.png")), "NUL byte"),
    "5000-character name": (lambda r: _edit(r, lambda m: m["frames"][1].update(file_path="x" * 5000)), "too long"),
    "camera_angle_x 0": (lambda r: _edit(r, lambda m: [m.pop(k) for k in ("fl_x", "fl_y")] and m.update(camera_angle_x=0)),
                         "camera_angle_x is 0"),
    "w 1e400": (lambda r: (r / "transforms.json").write_text(
        (r / "transforms.json").read_text().replace('"w": 40', '"w": 1e400')), "w is inf"),
    "not UTF-8": (lambda r: (r / "transforms.json").write_bytes(b'{"frames": ["\xff"]}'), "not UTF-8"),
    "applied_transform text": (lambda r: _edit(r, lambda m: m.update(applied_transform="x")), "applied_transform"),
    "camera_model": (lambda r: _edit(r, lambda m: m.update(camera_model="EQUIRECTANGULAR")), "not supported"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_transforms_json_one_line(tmp_path, capsys, case):
    write_transforms(tmp_path, n=4)
    fn, match = JSON_CASES[case]
    fn(tmp_path)
    before = tree_digest(tmp_path)
    err = in_process(["info", str(tmp_path)], capsys, str(tmp_path / "transforms.json"))
    assert match in err and tree_digest(tmp_path) == before


def test_bad_transforms_json_subprocess(tmp_path):
    """The report's command lines: deep nesting (was RecursionError) and `"fl_x": "sixty"`."""
    root = tmp_path / "scene"
    write_transforms(root, n=4)
    _deep(root)
    assert_clean(cli(root), str(root / "transforms.json"), "nested too deeply")
    write_transforms(root, n=4)
    _edit(root, lambda m: m.update(fl_x="sixty"))
    assert_clean(cli(root), str(root / "transforms.json"), "sixty")


def _npy(kind: str, path: Path) -> None:
    if kind == "complex":
        np.save(path, np.ones((4, 17), np.complex128))
    elif kind == "string":
        np.save(path, np.full((4, 17), "x"))
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.ones((4, 17)))
    elif kind == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "short":  # a header claiming far more rows than the file holds
        np.save(path, np.ones((4, 17)))
        b = path.read_bytes()
        header_end = b.index(b"\n") + 1
        path.write_bytes(b[:header_end].replace(b"(4, 17)", b"(9, 17)") + b[header_end:])


@pytest.mark.parametrize("kind,match", [("complex", "complex128 values"), ("string", "<U1 values"),
                                        ("npz", "npz archive"), ("pickle", "cannot read as a .npy array"),
                                        ("short", "cannot read as a .npy array")])
def test_bad_poses_bounds(tmp_path, capsys, kind, match):
    write_llff(tmp_path, n=4)
    _npy(kind, tmp_path / "poses_bounds.npy")
    err = in_process(["info", str(tmp_path)], capsys, str(tmp_path / "poses_bounds.npy"))
    assert match in err


def test_poses_bounds_npz_subprocess(tmp_path):
    root = tmp_path / "scene"
    write_llff(root, n=4)
    _npy("npz", root / "poses_bounds.npy")
    assert_clean(cli(root), str(root / "poses_bounds.npy"), "npz")


def test_tiny_images_refused(tmp_path, capsys):
    root = tmp_path / "scene"
    write_colmap(root, n=4, w=1, h=1, params=[1.0, 1.0, 0.5, 0.5])
    err = in_process(["info", str(root)], capsys, "img_000.png")
    assert "1x1 pixels" in err and "at least 11x11" in err
    r = cli(root)
    assert_clean(r, "img_000.png", "1x1 pixels")
    # a real size that --downscale makes too small names the factor
    write_colmap(tmp_path / "small", n=4)
    with pytest.raises(SceneError, match=r"10x8 pixels as loaded \(downscale 4\)"):
        load_scene(tmp_path / "small", downscale=4)


def test_symlink_loops(tmp_path, capsys):
    # a loop among the photos of a bare folder is not a photo
    photos = tmp_path / "photos"
    for k in range(2):
        write_image(photos / f"p{k}.jpg", seed=k)
    (photos / "loop.jpg").symlink_to(photos / "loop.jpg")
    assert main(["info", str(photos), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 2
    # a loop where a scene's image should be: that image is missing, said in one line
    root = tmp_path / "scene"
    write_colmap(root, n=3)
    (root / "images" / "img_001.png").unlink()
    (root / "images" / "img_001.png").symlink_to(root / "images" / "img_001.png")
    in_process(["info", str(root)], capsys, str(root / "images" / "img_001.png"), "missing")
    # the images folder itself a loop
    shutil.rmtree(root / "images")
    (root / "images").symlink_to(root / "images")
    r = cli(root)
    assert_clean(r, "missing")


# ---- item 10: frames outside the dataset folder load, with one warning --------------------------
def test_frames_outside_the_dataset_warn_once(tmp_path, capsys):
    root = tmp_path / "scene"
    write_transforms(root, n=5)
    outside = tmp_path / "elsewhere"
    for k in (1, 3):
        write_image(outside / f"o_{k}.png", seed=k)

    def move(meta):
        meta["frames"][1]["file_path"] = "../elsewhere/o_1.png"
        meta["frames"][3]["file_path"] = str(outside / "o_3.png")

    _edit(root, move)
    s = load_scene(root)
    assert len(s.cameras) == 5
    err = capsys.readouterr().err
    assert err.count("outside the dataset folder") == 1 and "2 of 5 frames" in err
    r = cli(root, "--json")
    assert r.returncode == 0 and r.stderr == ""
    warnings = json.loads(r.stdout)["warnings"]
    assert len(warnings) == 1 and "2 of 5 frames use an image outside the dataset folder" in warnings[0]


# ---- item 11: a matching format with incomplete files lets the next one load ----------------------
def _fern(root: Path) -> None:
    """LLFF's fern as downloaded: poses_bounds.npy, images/, and a partial sparse/0."""
    write_llff(root, n=6)
    write_colmap(root / "tmp", n=6)
    (root / "sparse" / "0").mkdir(parents=True)
    for f in ("cameras.bin", "points3D.bin"):
        shutil.copy(root / "tmp" / "sparse" / "0" / f, root / "sparse" / "0" / f)
    shutil.rmtree(root / "tmp")


def test_llff_with_partial_colmap_model_loads_as_llff(tmp_path, capsys):
    root = tmp_path / "fern"
    _fern(root)
    before = tree_digest(root)
    s = load_scene(root)
    assert s.format == "llff" and len(s.cameras) == 6
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "loaded as llff after colmap failed" in err and "incomplete" in err
    assert tree_digest(root) == before
    r = cli(root, "--json")  # the command line: exit 0, the fallback said once, in the summary
    assert r.returncode == 0 and r.stderr == ""
    d = json.loads(r.stdout)
    assert d["format"] == "llff" and len(d["warnings"]) == 1 and "colmap failed" in d["warnings"][0]
    # with format=colmap the COLMAP error stands alone
    with pytest.raises(SceneError, match="incomplete"):
        load_scene(root, format="colmap")


def test_no_format_loads_names_each(tmp_path):
    root = tmp_path / "fern"
    _fern(root)
    np.save(root / "poses_bounds.npy", np.ones((3, 17)))  # 3 poses, 6 images
    r = cli(root)
    err = assert_clean(r, str(root))
    assert "as colmap:" in err and "incomplete" in err and "as llff:" in err and "6 images but" in err
