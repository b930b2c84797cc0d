"""COLMAP: a sparse model (binary or text) and a folder of images. Read with pycolmap,
after `check_model` has walked the files (see below).

Layouts recognised from the scene folder ROOT, first complete one wins (`Scene.meta["layout"]`
says which):

* `sparse/0/` (or `sparse/`) with `images/`: COLMAP's mapper output, or the undistorted
  result of 3DGS's `convert.py`;
* `dense/0/{sparse,images}` (or `dense/{sparse,images}`): `colmap image_undistorter` output;
* `colmap/sparse/0/` with `images/`: nerfstudio's `ns-process-data` output (only when there is
  no `transforms.json` beside it, which nerfstudio's format reads first);
* `distorted/sparse/0/` with `input/`: the distorted model of COLMAP's pipeline.

The images folder is the first of `images/`, `input/`, `../input/`, `../images/` (relative to
the model's scene folder) that holds the model's images, so `ROOT/distorted` also loads.
`load(..., colmap_path=, images=)` overrides both. A `masks/` folder beside the images, with a
mask per image (`masks/NAME`, `masks/NAME.png` or `masks/STEM.png`, 0 = ignore), becomes
`ImageSet.mask`.

Accepted camera models: SIMPLE_PINHOLE, PINHOLE (used as is), SIMPLE_RADIAL, RADIAL,
OPENCV, OPENCV_FISHEYE (undistorted once, cached). Registered images only, sorted by name;
points3D and their colours become `Scene.points`. COLMAP's world-to-camera poses already
use OpenCV axes.

pycolmap trusts the record counts in binary files: a wrong count makes it read past the end
for minutes and gigabytes, and a bad reference can write out of bounds. `check_model` walks
every record first (bounded by the file's size, refusing counts the file cannot hold, unknown
camera models, dangling references, non-finite poses and points) and names the file.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .common import Frame, Intrinsics, build_scene, list_images
from .types import Scene, SceneError

NAME = "colmap"
MODEL_FILES = ("cameras.bin", "cameras.txt")
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE")
# COLMAP camera model id -> (name, number of parameters); fixed by COLMAP's file format.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16), 12: ("SIMPLE_DIVISION", 4), 13: ("DIVISION", 5),
    14: ("SIMPLE_FISHEYE", 3), 15: ("FISHEYE", 4), 16: ("EUCM", 6), 17: ("EQUIRECTANGULAR", 2),
}
MODEL_IDS = {name: k for k, (name, _) in CAMERA_MODELS.items()}
MAX_SIDE = 1 << 17  # pixels; larger image sides are a damaged file, not a photo
MAX_NAME = 4096  # bytes in an image name
INVALID_POINT3D = (1 << 64) - 1


# ---- where the model and the images are ----------------------------------------------
@dataclass(frozen=True)
class Layout:
    model: Path  # the sparse model folder
    image_dirs: tuple[Path, ...]  # candidates for the images folder, best first
    name: str  # what `info` shows, e.g. "dense/0"


def has_model(d: Path) -> bool:
    return any((d / f).is_file() for f in MODEL_FILES)


def complete(d: Path) -> bool:
    return all((d / f"{s}.bin").is_file() for s in ("cameras", "images", "points3D")) or \
        all((d / f"{s}.txt").is_file() for s in ("cameras", "images", "points3D"))


def _image_dirs(root: Path) -> tuple[Path, ...]:
    return (root / "images", root / "input", root.parent / "input", root.parent / "images")


def layouts(root: Path) -> list[Layout]:
    """Every layout under `root` that has a model folder (complete or not), in preference order."""
    cands = [
        Layout(root / "sparse" / "0", _image_dirs(root), "sparse/0"),
        Layout(root / "sparse", _image_dirs(root), "sparse"),
        Layout(root / "dense" / "0" / "sparse", (root / "dense" / "0" / "images",), "dense/0"),
        Layout(root / "dense" / "sparse", (root / "dense" / "images",), "dense"),
        Layout(root / "colmap" / "sparse" / "0", (root / "images",), "colmap/sparse/0"),
        Layout(root / "distorted" / "sparse" / "0", (root / "input", root / "images"), "distorted/sparse/0 + input/"),
    ]
    try:
        return [c for c in cands if has_model(c.model)]
    except OSError:  # a name too long or a loop: not a COLMAP folder
        return []


def find_layout(root: Path) -> Optional[Layout]:
    found = layouts(root)
    return next((lay for lay in found if complete(lay.model)), found[0] if found else None)


def sniff(path) -> bool:
    if path is None or not Path(path).is_dir():
        return False
    root = Path(path)
    found = layouts(root)
    # nerfstudio's own output keeps its COLMAP model in colmap/ beside transforms.json,
    # which says more (split, masks): let the nerfstudio format read that folder.
    return any(lay.name != "colmap/sparse/0" or not (root / "transforms.json").is_file() for lay in found)


# ---- walking the binary and text files (bounded by their size) ----------------------------
class _Reader:
    """Little-endian reads from a mapped file; every read checks the bytes are there."""

    def __init__(self, path: Path, buf):
        self.path, self.buf, self.pos, self.size = path, buf, 0, len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise SceneError(self.path, f"truncated or damaged: {what} runs past the end of the file "
                                        f"({self.size} bytes)")

    def unpack(self, fmt: str, what: str) -> tuple:
        n = struct.calcsize(fmt)
        self.need(n, what)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return out

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        self.need(count * dtype.itemsize, what)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += count * dtype.itemsize
        return out

    def count(self, min_record: int, what: str) -> int:
        (n,) = self.unpack("<Q", f"the number of {what}")
        room = (self.size - self.pos) // min_record
        if n > room:
            raise SceneError(self.path, f"says it holds {n} {what} but its {self.size} bytes fit at most {room} "
                                        "(a damaged or truncated file)")
        return n

    def finish(self) -> None:
        if self.pos != self.size:
            raise SceneError(self.path, f"{self.size - self.pos} bytes after the last record "
                                        "(a record count is wrong or the file is damaged)")


def _open(path: Path):
    """The file's bytes, mapped (an empty file maps to b"")."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise SceneError(path, f"cannot read ({e.strerror})") from None


@dataclass
class _Model:
    """What the checks need from a model: cameras {id: (model, w, h)}, images {id: (camera,
    name, number of 2D points)}, and the point tracks."""

    cameras: dict
    images: dict
    track_images: np.ndarray  # T, image id per track element
    track_points2d: np.ndarray  # T, 2D point index per track element


def _check_camera(path: Path, cid: int, model_id: int, w: int, h: int, params, nparams: int) -> tuple:
    if model_id not in CAMERA_MODELS:
        raise SceneError(path, f"camera {cid} has an unknown camera model id {model_id}")
    name, n = CAMERA_MODELS[model_id]
    if nparams != n:
        raise SceneError(path, f"camera {cid} ({name}) has {nparams} parameters, expected {n}")
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise SceneError(path, f"camera {cid} has an image size of {w}x{h} pixels (expected 1..{MAX_SIDE})")
    if not np.isfinite(np.asarray(params, np.float64)).all():
        raise SceneError(path, f"camera {cid} has non-finite parameters (NaN/Inf)")
    return name, w, h


def _check_pose(path: Path, iid: int, q, t, what: str = "image") -> None:
    q, t = np.asarray(q, np.float64), np.asarray(t, np.float64)
    ok = np.isfinite(q).all() and np.isfinite(t).all() and np.abs(q).max() < 1e150 and np.abs(t).max() < 1e150
    if not ok or np.linalg.norm(q) < 1e-12:
        raise SceneError(path, f"{what} {iid} has a non-finite or zero pose (NaN/Inf rotation or translation)")


def _add(table: dict, key: int, value, path: Path, what: str) -> None:
    if key in table:
        raise SceneError(path, f"{what} id {key} appears twice")
    table[key] = value


def _walk_binary(d: Path) -> _Model:
    cams, imgs = {}, {}
    p = d / "cameras.bin"
    r = _Reader(p, _open(p))
    for k in range(r.count(24 + 8 * 2, "cameras")):
        cid, model_id, w, h = r.unpack("<iiQQ", f"camera record {k}")
        nparams = CAMERA_MODELS.get(model_id, ("", 0))[1]
        if model_id not in CAMERA_MODELS:
            raise SceneError(p, f"camera {cid} has an unknown camera model id {model_id}")
        params = r.array(np.dtype("<f8"), nparams, f"camera {cid}'s parameters")
        _add(cams, cid, _check_camera(p, cid, model_id, w, h, params, nparams), p, "camera")
    r.finish()

    p = d / "images.bin"
    r = _Reader(p, _open(p))
    pt2d = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<u8")])
    for k in range(r.count(4 + 56 + 4 + 1 + 8, "images")):
        (iid,) = r.unpack("<I", f"image record {k}")
        pose = r.unpack("<7d", f"image {iid}'s pose")
        _check_pose(p, iid, pose[:4], pose[4:])
        (cid,) = r.unpack("<I", f"image {iid}'s camera id")
        end = r.buf.find(b"\0", r.pos, min(r.size, r.pos + MAX_NAME + 1))
        if end < 0:
            raise SceneError(p, f"image {iid}'s name is not terminated within {MAX_NAME} bytes (damaged file)")
        try:
            name = bytes(r.buf[r.pos:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise SceneError(p, f"image {iid}'s name is not UTF-8 text (damaged file)") from None
        r.pos = end + 1
        n2d = r.count(pt2d.itemsize, f"2D points of image {iid}")
        r.pos += n2d * pt2d.itemsize
        if cid not in cams:
            raise SceneError(p, f"image {iid} ({name}) names camera {cid}, which cameras.bin does not have")
        _add(imgs, iid, (cid, name, n2d), p, "image")
    r.finish()

    p = d / "points3D.bin"
    r = _Reader(p, _open(p))
    head = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length: 51 bytes
    buf, size = r.buf, r.size
    n = r.count(head.size, "points")
    pos, starts, lens = r.pos, [], []
    # The one loop over every point: keep it to a struct read and two appends (millions of points).
    for k in range(n):
        if pos + head.size > size:
            raise SceneError(p, f"truncated or damaged: point record {k} runs past the end of the file ({size} bytes)")
        pid, x, y, z, _, _, _, _, tl = head.unpack_from(buf, pos)
        pos += head.size
        if not (x - x == 0 and y - y == 0 and z - z == 0):  # NaN or Inf
            raise SceneError(p, f"point {pid} has a non-finite position (NaN/Inf)")
        if tl > (size - pos) // 8:
            raise SceneError(p, f"point {pid} says its track has {tl} elements but the file has room for at most "
                                f"{(size - pos) // 8} (a damaged or truncated file)")
        starts.append(pos)
        lens.append(tl)
        pos += 8 * tl
    r.pos = pos
    r.finish()
    _check_rig_files(d)
    elem = _track_positions(np.asarray(starts, np.int64), np.asarray(lens, np.int64))
    raw = np.frombuffer(buf, np.uint8) if size else np.zeros(0, np.uint8)
    return _Model(cams, imgs, _u32_at(raw, elem), _u32_at(raw, elem + 4))


def _track_positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Byte offset of every track element, given each track's start and length."""
    total = int(lens.sum())
    first = np.repeat(np.cumsum(lens) - lens, lens)
    return np.repeat(starts, lens) + 8 * (np.arange(total, dtype=np.int64) - first)


def _u32_at(raw: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Little-endian uint32 at unaligned byte offsets, in chunks to bound memory."""
    out = np.empty(len(positions), np.uint32)
    step = 1 << 20
    for s in range(0, len(positions), step):
        p = positions[s:s + step]
        out[s:s + len(p)] = np.ascontiguousarray(raw[p[:, None] + np.arange(4)]).view("<u4").ravel()
    return out


def _check_rig_files(d: Path) -> None:
    """rigs.bin / frames.bin (COLMAP >= 3.12): structure only, counts bounded by size."""
    p = d / "rigs.bin"
    if p.is_file():
        r = _Reader(p, _open(p))
        for k in range(r.count(8, "rigs")):
            _, n = r.unpack("<II", f"rig record {k}")
            if n > 0:
                r.unpack("<iI", f"rig record {k}'s reference sensor")
            for j in range(max(0, n - 1)):
                (has_pose,) = r.unpack("<iIB", f"rig record {k}'s sensor {j}")[2:]
                if has_pose:
                    pose = r.unpack("<7d", f"rig record {k}'s sensor {j} pose")
                    _check_pose(p, k, pose[:4], pose[4:], "rig")
        r.finish()
    p = d / "frames.bin"
    if p.is_file():
        r = _Reader(p, _open(p))
        for k in range(r.count(8 + 56 + 4, "frames")):
            fid, _, *pose = r.unpack("<II7d", f"frame record {k}")
            _check_pose(p, fid, pose[:4], pose[4:], "frame")
            (n,) = r.unpack("<I", f"frame record {k}'s data count")
            r.need(16 * n, f"frame record {k}'s {n} data ids")
            r.pos += 16 * n
        r.finish()


def _data_lines(path: Path):
    """(line number, stripped line) of a COLMAP text file, comments and blanks included."""
    try:
        with open(path, "rb") as f:
            for k, raw in enumerate(f, 1):
                try:
                    yield k, raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise SceneError(path, f"line {k} is not UTF-8 text") from None
    except OSError as e:
        raise SceneError(path, f"cannot read ({e.strerror})") from None


def _numbers(path: Path, k: int, tokens: list[str], what: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise SceneError(path, f"line {k}: {what} are not numbers") from None


def _ints(path: Path, k: int, tokens: list[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise SceneError(path, f"line {k}: {what} are not integers") from None


def _walk_text(d: Path) -> _Model:
    cams, imgs = {}, {}
    p = d / "cameras.txt"
    for k, line in _data_lines(p):
        if not line or line.startswith("#"):
            continue
        t = line.split()
        if len(t) < 4:
            raise SceneError(p, f"line {k}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
        cid, w, h = _ints(p, k, [t[0], t[2], t[3]], "camera id, width and height")
        if t[1] not in MODEL_IDS:
            raise SceneError(p, f"line {k}: unknown camera model {t[1]}")
        params = _numbers(p, k, t[4:], "camera parameters")
        _add(cams, cid, _check_camera(p, cid, MODEL_IDS[t[1]], w, h, params, len(params)), p, "camera")

    p = d / "images.txt"
    lines = _data_lines(p)
    for k, line in lines:
        if not line or line.startswith("#"):
            continue
        t = line.split()
        if len(t) < 10:
            raise SceneError(p, f"line {k}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        iid, cid = _ints(p, k, [t[0], t[8]], "image and camera ids")
        pose = _numbers(p, k, t[1:8], "the pose values")
        _check_pose(p, iid, pose[:4], pose[4:])
        name = line.split(maxsplit=9)[9]
        k2, pts = next(lines, (k + 1, ""))  # the 2D points line may be empty
        n = len(pts.split())
        if n % 3:
            raise SceneError(p, f"line {k2}: 2D points come in triples (X Y POINT3D_ID), found {n} values")
        if cid not in cams:
            raise SceneError(p, f"line {k}: image {iid} ({name}) names camera {cid}, which cameras.txt does not have")
        _add(imgs, iid, (cid, name, n // 3), p, "image")

    p = d / "points3D.txt"
    ti, tp = [], []
    for k, line in _data_lines(p):
        if not line or line.startswith("#"):
            continue
        t = line.split()
        if len(t) < 8 or (len(t) - 8) % 2:
            raise SceneError(p, f"line {k}: expected POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...")
        xyz = _numbers(p, k, t[1:4], "the coordinates")
        if not np.isfinite(xyz).all():
            raise SceneError(p, f"line {k}: point {t[0]} has a non-finite position (NaN/Inf)")
        track = _ints(p, k, t[8:], "track elements")
        if any(v < 0 or v >= 1 << 32 for v in track):
            raise SceneError(p, f"line {k}: a track element is out of range")
        ti.extend(track[0::2])
        tp.extend(track[1::2])
    return _Model(cams, imgs, np.asarray(ti, np.int64), np.asarray(tp, np.int64))


def check_model(d: Path) -> str:
    """Walk the model files pycolmap would read; SceneError naming the file on anything it
    could not read safely. Returns "bin" or "txt"."""
    kind = next((s for s in ("bin", "txt") if all((d / f"{n}.{s}").is_file() for n in ("cameras", "images", "points3D"))), None)
    if kind is None:
        have = sorted(p.name for p in d.iterdir() if p.is_file())
        raise SceneError(d, "the COLMAP model is incomplete: it needs cameras, images and points3D "
                            f"(.bin or .txt); found {', '.join(have) or 'nothing'}")
    m = _walk_binary(d) if kind == "bin" else _walk_text(d)
    p = d / f"points3D.{kind}"
    if len(m.track_images):
        ids = np.array(sorted(m.images), np.int64)
        if not len(ids):
            raise SceneError(p, f"points have tracks but images.{kind} has no images")
        n2d = np.array([m.images[i][2] for i in ids.tolist()], np.int64)
        ti = m.track_images.astype(np.int64)
        pos = np.clip(np.searchsorted(ids, ti), 0, len(ids) - 1)
        known = ids[pos] == ti
        if not known.all():
            raise SceneError(p, f"a point's track names image {int(ti[~known][0])}, which images.{kind} does not have")
        if np.any(m.track_points2d.astype(np.int64) >= n2d[pos]):
            raise SceneError(p, f"a point's track names a 2D point its image does not have (damaged images.{kind}?)")
    return kind


def read_model(d: Path):
    check_model(d)
    import pycolmap

    try:
        return pycolmap.Reconstruction(str(d))
    except Exception as e:
        raise SceneError(d, f"cannot read the COLMAP model ({type(e).__name__}: {e})") from None


# ---- scene --------------------------------------------------------------------------
def intrinsics(model: str, width: int, height: int, p: list[float], where: Path) -> Intrinsics:
    """COLMAP params -> canonical intrinsics (k1 k2 k3 k4 p1 p2)."""
    z = 0.0
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return Intrinsics(model, width, height, f, f, cx, cy)
    if model == "PINHOLE":
        fx, fy, cx, cy = p
        return Intrinsics(model, width, height, fx, fy, cx, cy)
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k, z, z, z, z, z))
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return Intrinsics(model, width, height, f, f, cx, cy, (k1, k2, z, z, z, z))
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return Intrinsics(model, width, height, fx, fy, cx, cy, (k1, k2, z, z, p1, p2))
    if model == "OPENCV_FISHEYE":
        fx, fy, cx, cy, k1, k2, k3, k4 = p
        return Intrinsics(model, width, height, fx, fy, cx, cy, (k1, k2, k3, k4, z, z))
    raise SceneError(where, f"camera model {model} is not supported (use one of {', '.join(SUPPORTED)}, "
                            "or undistort with `colmap image_undistorter` first)")


def _factors(root: Path) -> list[int]:
    out = []
    for p in root.parent.glob(root.name + "_*"):
        m = re.fullmatch(re.escape(root.name) + r"_(\d+)", p.name)
        if m and p.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def _pick_images(cands: tuple[Path, ...], names: list[str]) -> Path:
    """The candidate folder holding most of the model's images (the first existing one if none)."""
    sample = names[:: max(1, len(names) // 16)]
    best, score = None, 0
    for d in cands:
        try:
            n = sum((d / s).is_file() for s in sample) if d.is_dir() else -1
        except (OSError, ValueError):
            n = -1
        if n > score:
            best, score = d, n
    return best or next((d for d in cands if d.is_dir()), cands[0])


def _mask_file(masks: Path, name: str) -> Optional[Path]:
    for cand in (masks / name, masks / (name + ".png"), (masks / name).with_suffix(".png")):
        if cand.is_file():
            return cand
    return None


def _resolve(root: Path, p) -> Path:
    """A path from the command line: relative to the scene folder when it exists there."""
    p = Path(p)
    return root / p if not p.is_absolute() and (root / p).exists() else p


def load(path, *, downscale: int = 1, test_every: int = 8, background=None,
         images: Optional[Path] = None, colmap_path: Optional[Path] = None) -> Scene:
    root = Path(path)
    if colmap_path is not None:
        model = _resolve(root, colmap_path)
        if not has_model(model) and has_model(model / "0"):
            model = model / "0"
        if not has_model(model):
            raise SceneError(model, "no COLMAP model here (cameras.bin or cameras.txt)")
        lay = Layout(model, _image_dirs(root) + _image_dirs(model.parent.parent), "--colmap-path")
    else:
        lay = find_layout(root)
        if lay is None:
            raise SceneError(root, "no COLMAP model (sparse/0, dense/0/sparse, colmap/sparse/0 or distorted/sparse/0)")
    d = lay.model
    rec = read_model(d)
    regs = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not regs:
        raise SceneError(d, "the COLMAP model has no registered images")
    image_root = _resolve(root, images) if images is not None else _pick_images(lay.image_dirs, [im.name for im in regs])
    if images is not None and not image_root.is_dir():
        raise SceneError(image_root, "--images: no such folder")
    frames = []
    for im in regs:
        cam = rec.cameras[im.camera_id]
        intr = intrinsics(cam.model.name, int(cam.width), int(cam.height), [float(v) for v in cam.params], d)
        w2c = np.asarray(im.cam_from_world().matrix(), np.float64)
        c2w = np.eye(4)
        with np.errstate(all="ignore"):  # a damaged pose overflows here; check_cameras names it
            c2w[:3, :3], c2w[:3, 3] = w2c[:3, :3].T, -w2c[:3, :3].T @ w2c[:3, 3]
        frames.append(Frame(image_root / im.name, c2w, intr, name=im.name))

    masks = None
    mask_dir = image_root.parent / "masks"
    if mask_dir.is_dir() and list_images(mask_dir):
        masks = [_mask_file(mask_dir, fr.name) for fr in frames]
        lacking = [fr.name for fr, m in zip(frames, masks) if m is None]
        if lacking:
            raise SceneError(mask_dir, f"{len(lacking)} of {len(frames)} images have no mask here "
                                       f"(e.g. {lacking[0]}; expected masks/NAME or masks/NAME.png)")

    pts = rec.points3D
    xyz = np.array([p.xyz for p in pts.values()], dtype=np.float64).reshape(-1, 3)
    rgb = np.array([p.color for p in pts.values()], dtype=np.uint8).reshape(-1, 3)

    def downscaled(p: Path, n: int) -> Path:
        return image_root.parent / f"{image_root.name}_{n}" / p.relative_to(image_root)

    layout = lay.name if lay.name != "--colmap-path" else f"model {d}, images {image_root}"
    return build_scene(
        fmt=NAME, root=root, frames=frames, downscale=downscale, test_every=test_every,
        background=background, points=xyz, point_colors=rgb, masks=masks,
        downscaled=downscaled, factors=_factors(image_root), source=d,
        meta={"layout": layout, "model_dir": str(d)},
    )
