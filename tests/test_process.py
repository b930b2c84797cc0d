"""`splatlab process`: one real SfM run end to end on a synthetic scene rendered here with
known poses (no shared data needed), every bad-input case, caching, and the long targets
on the shared captures (SPLATLAB_LONG=1)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from splatlab.scenes.capture import CaptureError  # noqa: E402
from splatlab.scenes.capture.process import ImageInfo, ProcessArgs, camera_groups, posed_dataset, process, scan  # noqa: E402

from conftest import shared_dataset  # noqa: E402

# ----------------------------------------------------------------------------- synthetic scene


def _texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Colourful multi-scale noise: blobs at several sizes, so SIFT finds many distinct corners."""
    tex = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((4, 0.8), (8, 1.0), (16, 1.0), (32, 0.8), (64, 0.5)):
        small = rng.random((cells, cells, 3), dtype=np.float32)
        idx = (np.arange(size) * cells // size)
        tex += weight * small[idx][:, idx]
    tex -= tex.min()
    return tex / tex.max()


# Axis-aligned textured rectangles: (axis, coordinate, (lo, hi) of the other two axes in order).
_FACES = [
    (2, 0.0, ((-3.0, 3.0), (-3.0, 3.0))),  # floor z=0
    (1, 3.0, ((-3.0, 3.0), (0.0, 3.0))),  # back wall y=3
    (0, -3.0, ((-3.0, 3.0), (0.0, 3.0))),  # left wall x=-3
    (0, 0.6, ((-0.6, 0.6), (0.0, 1.2))),  # a box: its +x face ...
    (1, -0.6, ((-0.6, 0.6), (0.0, 1.2))),  # ... its -y face ...
    (2, 1.2, ((-0.6, 0.6), (-0.6, 0.6))),  # ... and its top
]


def look_at(eye, target) -> np.ndarray:
    """World-from-camera 4x4, OpenCV axes (x right, y down, z forward), world z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, fwd], axis=1)
    T[:3, 3] = eye
    return T


def render(c2w: np.ndarray, textures, w: int = 320, h: int = 240, f: float = 260.0) -> np.ndarray:
    """Ray-cast the textured faces: uint8 H W 3."""
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = np.stack([(u - w / 2) / f, (v - h / 2) / f, np.ones_like(u)], -1).reshape(-1, 3) @ c2w[:3, :3].T
    o = c2w[:3, 3]
    best_t = np.full(len(d), np.inf)
    color = np.zeros((len(d), 3), np.float32)
    for (axis, c, bounds), tex in zip(_FACES, textures):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (c - o[axis]) / d[:, axis]
        p = o + t[:, None] * d
        others = [a for a in range(3) if a != axis]
        (a0, a1), (b0, b1) = bounds
        s = (p[:, others[0]] - a0) / (a1 - a0)
        r = (p[:, others[1]] - b0) / (b1 - b0)
        hit = (t > 1e-6) & (t < best_t) & (s >= 0) & (s < 1) & (r >= 0) & (r < 1)
        n = tex.shape[0]
        # bilinear texture lookup
        x, y = s[hit] * (n - 1), r[hit] * (n - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, n - 1), np.minimum(y0 + 1, n - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        col = (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x1] * fx * (1 - fy)
               + tex[y1, x0] * (1 - fx) * fy + tex[y1, x1] * fx * fy)
        color[hit] = col
        best_t[hit] = t[hit]
    return (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)


def synthetic_views(n: int = 8, seed: int = 0, arc_deg: float = 50.0):
    """n views on an arc around the box, all looking at it: (images, world-from-camera poses)."""
    rng = np.random.default_rng(seed)
    textures = [_texture(rng) for _ in _FACES]
    poses, images = [], []
    for a in np.linspace(-arc_deg / 2, arc_deg / 2, n):
        th = np.deg2rad(a - 45.0)  # the arc faces the box's +x/-y corner
        eye = [4.2 * np.cos(th), 4.2 * np.sin(th), 1.8]
        c2w = look_at(eye, [0.0, 0.0, 0.6])
        poses.append(c2w)
        images.append(render(c2w, textures))
    return images, np.stack(poses)


def write_views(folder: Path, images) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"view_{i:02d}.png"
        Image.fromarray(im).save(p)
        paths.append(p)
    return paths


def _umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) with dst ~ s R src + t."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / xs.var(0).sum()
    return s, R, mu_d - s * R @ mu_s


def recovered_poses(sparse: Path, names: list[str]) -> np.ndarray:
    rec = pycolmap.Reconstruction(str(sparse))
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    out = []
    for n in names:
        w2c = np.eye(4)
        w2c[:3, :4] = by_name[n].cam_from_world().matrix()
        out.append(np.linalg.inv(w2c))
    return np.stack(out)


def _console():
    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=200, highlight=False), buf


@pytest.fixture(scope="module", autouse=True)
def process_cache(tmp_path_factory):
    """A cache of this module's own: `process` records what it wrote there (never in ~)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPLATLAB_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, process_cache):
    """One real SfM run (about 10 s on 2 cores), shared by the tests below."""
    root = tmp_path_factory.mktemp("synthetic")
    images, gt = synthetic_views()
    src = root / "photos"
    write_views(src, images)
    (src / "notes.txt").write_text("not an image\n")  # must be skipped with a warning
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    console, buf = _console()
    args = ProcessArgs(input=src, output=root / "scene")
    t = time.perf_counter()
    result = process(args, console=console)
    seconds = time.perf_counter() - t
    return dict(root=root, src=src, gt=gt, result=result, log=buf.getvalue(), seconds=seconds, before=before)


def test_synthetic_scene_registers_all_views_with_true_poses(synthetic_run):
    r = synthetic_run["result"]
    meta = r.meta
    assert meta["registered"] == meta["total"] == 8, synthetic_run["log"]
    assert meta["cameras"] == 1  # one size, no EXIF: a shared camera
    assert meta["mean_reprojection_error"] < 1.5
    assert "registered 8/8" in synthetic_run["log"]
    names = [f"view_{i:02d}.png" for i in range(8)]
    est = recovered_poses(r.output / "sparse" / "0", names)
    gt = synthetic_run["gt"]
    s, R, t = _umeyama(est[:, :3, 3], gt[:, :3, 3])
    centers = s * est[:, :3, 3] @ R.T + t
    spread = np.linalg.norm(gt[:, :3, 3] - gt[:, :3, 3].mean(0), axis=1).max()
    assert np.abs(centers - gt[:, :3, 3]).max() < 0.05 * spread
    for e, g in zip(est, gt):
        dR = (R @ e[:3, :3]).T @ g[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
        assert angle < 1.0


def test_non_images_are_skipped_with_a_warning(synthetic_run):
    assert "skipped 1 file that are not images" in synthetic_run["log"]
    assert synthetic_run["result"].meta["skipped_files"] == 1


def test_input_folder_untouched_and_output_layout(synthetic_run):
    src = synthetic_run["src"]
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == synthetic_run["before"]
    out = synthetic_run["result"].output
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"view_{i:02d}.png" for i in range(8)]
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (out / "sparse" / "0" / f).is_file()
    assert not list(out.parent.glob(".*tmp-*"))


def test_output_reads_as_colmap_scene(synthetic_run):
    out = synthetic_run["result"].output
    try:
        from splatlab.app.info import describe
    except ImportError:
        describe = None
    if describe is not None:
        d = describe(str(out))
        assert d["format"] == "colmap"
    from splatlab.scenes import load_scene

    scene = load_scene(out)
    assert scene.format == "colmap"
    assert len(scene.cameras) == 8
    assert scene.points is not None and len(scene.points) > 100
    h, w, _ = scene.images[0].shape  # the loader undistorts SIMPLE_RADIAL: a few pixels may be cropped
    assert abs(h - 240) <= 8 and abs(w - 320) <= 8


def test_second_call_is_cached(synthetic_run):
    src, out = synthetic_run["src"], synthetic_run["result"].output
    t = time.perf_counter()
    again = posed_dataset(src, output=out, console=_console()[0])
    assert again == out
    assert time.perf_counter() - t < 0.25 * synthetic_run["seconds"] + 1.0
    # Other options are another result: refused over an existing output without --overwrite.
    with pytest.raises(CaptureError, match="--overwrite"):
        process(ProcessArgs(input=src, output=out, max_num_features=1000), console=_console()[0])


def test_default_output_goes_to_the_cache_not_the_input(synthetic_run, monkeypatch, tmp_path):
    from splatlab.scenes.capture.process import cache_key, default_output

    monkeypatch.setenv("SPLATLAB_CACHE", str(tmp_path / "cache"))
    src = synthetic_run["src"]
    key = cache_key(scan(src), ProcessArgs(input=src))
    out = default_output(src, key)
    assert out.parent == tmp_path / "cache" / "processed"
    assert out.name == f"photos-{key}"
    # The key follows the images' bytes and the options.
    assert cache_key(scan(src), ProcessArgs(input=src, max_image_size=800)) != key


def test_cli_prints_output_path(synthetic_run, capsys):
    from splatlab.app.cli import main

    out = synthetic_run["result"].output
    assert main(["process", str(synthetic_run["src"]), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)


# ----------------------------------------------------------------------------- bad input


def _write_noise(folder: Path, n: int, size=(320, 240), seed=0, suffix=".jpg") -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img_{i}{suffix}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_fewer_than_three_images(tmp_path):
    _write_noise(tmp_path / "two", 2)
    (tmp_path / "two" / "readme.md").write_text("x")
    with pytest.raises(CaptureError, match=r"found 2 images \(1 other file skipped\).*at least 3") as e:
        process(ProcessArgs(input=tmp_path / "two", output=tmp_path / "out"), console=_console()[0])
    assert e.value.path == tmp_path / "two"
    assert not (tmp_path / "out").exists()


def test_missing_input(tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        process(ProcessArgs(input=tmp_path / "nope"), console=_console()[0])


def test_single_image_file(tmp_path):
    p = _write_noise(tmp_path, 1)[0]
    with pytest.raises(CaptureError, match="single image") as e:
        process(ProcessArgs(input=p), console=_console()[0])
    assert e.value.path == p


def test_unreadable_image_is_named(tmp_path):
    paths = _write_noise(tmp_path / "photos", 4)
    bad = paths[2]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated JPEG
    with pytest.raises(CaptureError, match="cannot read this image") as e:
        process(ProcessArgs(input=tmp_path / "photos", output=tmp_path / "out"), console=_console()[0])
    assert e.value.path == bad
    assert str(bad) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_video_that_cannot_be_decoded(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CaptureError, match="cannot decode") as e:
        process(ProcessArgs(input=bad, output=tmp_path / "out"), console=_console()[0])
    assert e.value.path == bad
    assert not (tmp_path / "out").exists()


def test_mixed_sizes_and_cameras_get_one_camera_per_device(tmp_path):
    """Different sizes and EXIF devices are supported (one camera per group), not an error."""
    from PIL import Image

    from splatlab.scenes.capture.process import stage_images

    rng = np.random.default_rng(0)
    src = tmp_path / "mixed"
    src.mkdir()

    def save(name, size, make=None, model=None):
        im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        exif = Image.Exif()
        if make:
            exif[0x010F], exif[0x0110] = make, model
        im.save(src / name, exif=exif.tobytes())

    save("a1.jpg", (320, 240), "Apple", "iPhone 12")
    save("a2.jpg", (320, 240), "Apple", "iPhone 12")
    save("b1.jpg", (320, 240), "Canon", "EOS R")
    save("c1.jpg", (1600, 200))
    save("d1.jpg", (200, 1600))
    infos = stage_images(scan(src).files, tmp_path / "out")
    groups = sorted(sorted(g) for g in camera_groups(infos))
    assert groups == [["a1.jpg", "a2.jpg"], ["b1.jpg"], ["c1.jpg"], ["d1.jpg"]]
    # No EXIF and one size (video frames, a burst): one shared camera.
    same = [ImageInfo(f"f{i}.jpg", (720, 1280), ()) for i in range(5)]
    assert camera_groups(same) == [[i.name for i in same]]
    assert len(camera_groups(same, "per-image")) == 5


def test_exif_rotated_photo_is_stored_upright(tmp_path):
    from PIL import Image

    from splatlab.scenes.capture.process import stage_images

    src = tmp_path / "rot"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (320, 240), (10, 200, 30)).save(src / "r.jpg", exif=exif.tobytes())
    infos = stage_images([src / "r.jpg"], tmp_path / "out")
    assert infos[0].size == (240, 320)
    with Image.open(tmp_path / "out" / infos[0].name) as im:
        assert im.size == (240, 320)
        assert im.getexif().get(0x0112, 1) == 1


def test_sfm_that_finds_no_model(tmp_path):
    """Unrelated noise images: no overlap, so no model: one line with advice."""
    _write_noise(tmp_path / "noise", 4, size=(200, 150))
    console, buf = _console()
    with pytest.raises(CaptureError, match=r"posed 0 of 4 images.*overlap") as e:
        process(ProcessArgs(input=tmp_path / "noise", output=tmp_path / "out", max_image_size=200),
                console=console)
    assert e.value.path == tmp_path / "noise"
    # Every fallback ran: both mappers, relaxed options, then one camera per image.
    log = buf.getvalue()
    for stage in ("map (global)", "map (incremental)", "map (incremental-relaxed)", "map (global-relaxed)",
                  "retrying with one camera per image"):
        assert stage in log
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_output_inside_input_is_refused(tmp_path):
    _write_noise(tmp_path / "photos", 3)
    with pytest.raises(CaptureError, match="inside the input folder"):
        process(ProcessArgs(input=tmp_path / "photos", output=tmp_path / "photos" / "scene"), console=_console()[0])
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]


def test_foreign_output_folder_is_never_replaced(tmp_path):
    _write_noise(tmp_path / "photos", 3)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(CaptureError, match="not made by `splatlab process`"):
            process(ProcessArgs(input=tmp_path / "photos", output=tmp_path / "mine", overwrite=overwrite),
                    console=_console()[0])
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _cli(*args, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPLATLAB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "splatlab.app.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def test_overwrite_never_deletes_a_folder_it_did_not_write(synthetic_run, process_cache, tmp_path):
    """issue 13 item 2: a stray process.json (empty, or a real one copied from splatlab's
    own result) does not make a folder splatlab's: --overwrite exits 2 with one line and
    deletes nothing."""
    src = synthetic_run["src"]
    real = (synthetic_run["result"].output / "process.json").read_text()
    for marker in ("{}\n", real):
        d = tmp_path / "d"
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "notes.md").write_text("mine")
        (d / "process.json").write_text(marker)
        (d / "important.txt").write_text("x\n")
        before = _tree(d)
        proc = _cli("process", src, "--output", d, "--overwrite", cache=process_cache)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and str(d) in err and "nothing was deleted" in err
        assert _tree(d) == before
        assert not list(tmp_path.glob(".d.tmp-*"))
        import shutil

        shutil.rmtree(d)


def test_overwrite_refuses_its_own_result_with_anything_added(synthetic_run, process_cache):
    out = synthetic_run["result"].output
    for extra in (out / "my_notes.txt", out / "sparse" / "0" / "extra.bin", out / "images" / "mine"):
        if extra.name == "mine":
            extra.mkdir()
        else:
            extra.write_bytes(b"keep")
        before = _tree(out)
        with pytest.raises(CaptureError, match=r"holds 1 entry .* did not write .*nothing\s+was deleted") as e:
            process(ProcessArgs(input=synthetic_run["src"], output=out, overwrite=True), console=_console()[0])
        assert e.value.path == out
        assert _tree(out) == before
        extra.rmdir() if extra.is_dir() else extra.unlink()


def test_reprocess_over_its_own_result_with_overwrite(synthetic_run, process_cache):
    """The real thing: splatlab's own output is replaced (one more SfM run, ~10 s), its
    recorded files only, and the new result records a new key and exactly its files."""
    from splatlab.scenes.capture.process import owned_entries

    out = synthetic_run["result"].output
    neighbour = out.parent / "neighbour.txt"
    neighbour.write_text("beside, not inside")
    old = json.loads((out / "process.json").read_text())["written"]
    files, folders = owned_entries(out)
    assert files == old["files"] and "process.json" in files and "sparse/0/images.bin" in files
    assert "images" in folders and "sparse/0" in folders
    res = process(ProcessArgs(input=synthetic_run["src"], output=out, overwrite=True), console=_console()[0])
    assert not res.cached and res.meta["registered"] == 8
    new = json.loads((out / "process.json").read_text())["written"]
    assert new["key"] != old["key"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert new["files"] == on_disk
    assert owned_entries(out) == (new["files"], new["folders"])
    assert neighbour.read_text() == "beside, not inside"
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_cli_error_is_one_line(tmp_path, capsys):
    from splatlab.app.cli import main

    _write_noise(tmp_path / "two", 2)
    assert main(["process", str(tmp_path / "two")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(tmp_path / "two") in err


# ----------------------------------------------------------------------------- video


@pytest.mark.slow
def test_synthetic_video_end_to_end(tmp_path):
    """A short orbit rendered to mp4 -> frames -> sequential matching -> a posed scene (~15 s)."""
    iio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    images, _ = synthetic_views(n=36, seed=1, arc_deg=60.0)
    video = tmp_path / "orbit.mp4"
    with iio.get_writer(video, fps=12, codec="libx264", quality=9, macro_block_size=16) as w:
        for im in images:
            w.append_data(im)
    res = process(ProcessArgs(input=video, output=tmp_path / "scene", num_frames=10), console=_console()[0])
    assert res.meta["kind"] == "video" and res.meta["matcher"] == "sequential"
    assert res.meta["total"] == 10
    assert res.meta["registered"] >= 9
    assert (tmp_path / "scene" / "images" / "frame_00001.jpg").is_file()


# ----------------------------------------------------------------------------- long targets

LONG = os.environ.get("SPLATLAB_LONG") == "1"
long_only = pytest.mark.skipif(not LONG, reason="long SfM target on shared data: set SPLATLAB_LONG=1 to run")


def _target(tmp_path, data: Path, min_registered: int, max_seconds: float, **kw):
    t = time.perf_counter()
    res = process(ProcessArgs(input=data, output=tmp_path / "scene", **kw), console=_console()[0])
    seconds = time.perf_counter() - t
    m = res.meta
    print(f"{data}: registered {m['registered']}/{m['total']} in {seconds:.1f} s with {m['mapper']} "
          f"({m['matcher']}), stages {m['seconds']}")
    assert m["registered"] >= min_registered
    assert seconds < max_seconds


@pytest.mark.slow
@long_only
def test_target_sacre_coeur(tmp_path):
    _target(tmp_path, shared_dataset("sacre_coeur"), 10, 120)


@pytest.mark.slow
@long_only
def test_target_beer_images(tmp_path):
    _target(tmp_path, shared_dataset("beer/images"), 70, 300)


@pytest.mark.slow
@long_only
def test_target_beer_video(tmp_path):
    _target(tmp_path, shared_dataset("beer/Beer.mp4"), 54, 300, num_frames=60)
