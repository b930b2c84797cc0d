"""What every posed-image format shares once its own file is parsed: image checks,
downscaling, undistortion, the persistent cache, normalization and the train/test split.

A format module turns its files into a list of `Frame`s (image path, OpenCV
camera-to-world in the dataset's own frame, intrinsics as declared) and calls
`build_scene`. Conventions:

* Intrinsics are canonical `Intrinsics`: fx fy cx cy at the resolution of the declared
  width/height, plus distortion k1 k2 k3 k4 p1 p2 (polynomial radial in r^2..r^8, OpenCV
  tangential; k4 must be 0), or, for model OPENCV_FISHEYE, k1..k4 of OpenCV's fisheye
  (equidistant) model. Pixel centres sit at +0.5 (COLMAP/OpenCV continuous coordinates),
  so scaling an image scales fx..cy alike.
* Distorted and fisheye cameras are undistorted once with pycolmap (blank-free crop, the
  COLMAP default), so `Scene.cameras` are always pinhole (one rasterizer path for every
  method) and may be a few pixels smaller than the files. A fisheye wider than a pinhole
  can show loses its rim.
* Checks at load, each a SceneError naming the file: finite poses whose rotation is a
  rotation, cameras not all at one spot, finite intrinsics with focal lengths in
  (0, 1000 x image size], image sides in 1..131072 declared and >= MIN_SIDE (SSIM's
  window) as loaded, finite initial points, masks the size of their images.
* `Scene.name` is the scene folder's name, skipping generic ones (`0`, `dense`, `sparse`,
  `images`, ...) up the path: `.../room/dense/0` is `room`.
* Normalization (recorded in `Scene.normalization`): translation plus uniform scale,
  rotation identity (unless a format declares a rotation, e.g. nerfstudio's
  `applied_transform`): centre on the mean camera centre and scale so the farthest camera
  centre is at distance 1. Points are normalized the same way.
* Split: the dataset's own test split where it has one, else images sorted by file name
  and every `test_every`-th (indices 0, test_every, ...) held out; test_every <= 0 keeps all
  for training.
* Downscale N: an existing complete `images_N/`-style folder is used as is; otherwise
  images are resized on load. Resized or undistorted images are cached under
  `files.cache_root()` ($SPLATLAB_CACHE, else $XDG_CACHE_HOME/splatlab, else
  ~/.cache/splatlab), keyed by a hash of the source file's bytes and the operation,
  never inside the dataset.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch

from .files import atomic_write_bytes, cache_root
from .geometry import Normalization
from .types import Cameras, ImageSet, Scene, SceneError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 11  # pixels: the SSIM window of the training loss
MAX_SIDE = 1 << 17
MAX_FOCAL = 1000.0  # focal lengths beyond this many image sizes (a 0.06 degree view) are damaged files
MAX_COORD = 1e12  # camera and point coordinates beyond this are damaged files (float32 math breaks first)
FISHEYE = ("OPENCV_FISHEYE",)
GENERIC_NAMES = {"dense", "sparse", "distorted", "undistorted", "colmap", "images", "input", "output", "masks",
                 "data", "processed", "stereo", "scene", "."}


@dataclass(frozen=True)
class Intrinsics:
    """One camera as declared by the dataset (pixels at width x height)."""

    model: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, float, float, float, float, float] = (0.0,) * 6  # k1 k2 k3 k4 p1 p2

    @property
    def distorted(self) -> bool:
        """Not a pinhole: its images must be undistorted (a fisheye always is)."""
        return self.model in FISHEYE or any(abs(d) > 0 for d in self.dist)

    def scaled(self, sx: float, sy: float, width: int, height: int) -> "Intrinsics":
        return Intrinsics(self.model, width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, self.dist)


@dataclass
class Frame:
    image: Path  # full-resolution image file
    c2w: np.ndarray  # 4 4, OpenCV axes, dataset frame
    intr: Intrinsics
    name: str = ""  # display name (relative path); defaults to the file name

    def __post_init__(self):
        self.name = self.name or self.image.name


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def scene_name(root: Path) -> str:
    """The scene's name from its folder, skipping generic components (`0`, `dense`, `images_4`)."""
    parts = Path(os.path.abspath(root)).parts
    for part in reversed(parts):
        low = part.lower()
        if low in GENERIC_NAMES or low.isdigit() or (low.startswith("images_") and low[7:].isdigit()):
            continue
        return part
    return Path(root).name or "scene"


# ---- image files ------------------------------------------------------------------
def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image

    if not path.is_file():
        raise SceneError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception as e:  # PIL raises several types for bad files
        raise SceneError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def read_image(path: Path) -> np.ndarray:
    """uint8 H W 3, or H W 4 where the file has alpha."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            return np.asarray(im.convert("RGBA" if has_alpha else "RGB")).copy()
    except FileNotFoundError:
        raise SceneError(path, "image file is missing") from None
    except Exception as e:
        raise SceneError(path, f"cannot decode image ({type(e).__name__}: {e})") from None


def read_mask(path: Path) -> np.ndarray:
    """uint8 H W (0 = ignore the pixel, 255 = use it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")).copy()
    except FileNotFoundError:
        raise SceneError(path, "mask file is missing") from None
    except Exception as e:
        raise SceneError(path, f"cannot decode mask ({type(e).__name__}: {e})") from None


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (links that loop or dangle are not files)."""
    try:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir()
                      if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())
    except OSError as e:
        raise SceneError(folder, f"cannot list the folder ({e.strerror})") from None


# ---- undistortion (pycolmap) ------------------------------------------------------
def _pycolmap(intr: Intrinsics):
    """pycolmap (a dependency, imported only here), or a one-line SceneError with the fix."""
    try:
        import pycolmap
    except ImportError:
        raise SceneError(None, f"undistorting {intr.model} images needs pycolmap, which is not installed: "
                         "pip install pycolmap (or reinstall splatlab)") from None
    return pycolmap


def _colmap_camera(intr: Intrinsics):
    pycolmap = _pycolmap(intr)

    k1, k2, k3, k4, p1, p2 = intr.dist
    if intr.model in FISHEYE:
        return pycolmap.Camera(model="OPENCV_FISHEYE", width=intr.width, height=intr.height,
                               params=[intr.fx, intr.fy, intr.cx, intr.cy, k1, k2, k3, k4])
    if k4 != 0:
        raise ValueError("k4 (r^8 radial) distortion is not supported")
    if k3 == 0:
        return pycolmap.Camera(model="OPENCV", width=intr.width, height=intr.height,
                               params=[intr.fx, intr.fy, intr.cx, intr.cy, k1, k2, p1, p2])
    return pycolmap.Camera(model="FULL_OPENCV", width=intr.width, height=intr.height,
                           params=[intr.fx, intr.fy, intr.cx, intr.cy, k1, k2, p1, p2, k3, 0, 0, 0])


def _undistort_options(intr: Intrinsics):
    return _pycolmap(intr).UndistortCameraOptions()  # blank-free crop, as `colmap image_undistorter`


def undistorted(intr: Intrinsics) -> Intrinsics:
    """The pinhole camera that undistorted images of `intr` have."""
    if not intr.distorted:
        return intr
    cam = _pycolmap(intr).undistort_camera(_undistort_options(intr), _colmap_camera(intr))
    fx, fy, cx, cy = (float(v) for v in cam.params)
    return Intrinsics("PINHOLE", int(cam.width), int(cam.height), fx, fy, cx, cy)


def undistort_mask(mask: np.ndarray, intr: Intrinsics) -> np.ndarray:
    pycolmap = _pycolmap(intr)
    out = pycolmap.undistort_image(_undistort_options(intr), pycolmap.Bitmap.from_array(np.ascontiguousarray(mask)),
                                   _colmap_camera(intr))[0].to_array()
    return out.reshape(out.shape[:2])


def undistort_image(img: np.ndarray, intr: Intrinsics) -> np.ndarray:
    pycolmap = _pycolmap(intr)
    cam, opts = _colmap_camera(intr), _undistort_options(intr)
    out = pycolmap.undistort_image(opts, pycolmap.Bitmap.from_array(np.ascontiguousarray(img[..., :3])), cam)[0].to_array()
    if img.shape[-1] == 4:
        a = pycolmap.undistort_image(opts, pycolmap.Bitmap.from_array(np.ascontiguousarray(img[..., 3])), cam)[0].to_array()
        out = np.concatenate([out.reshape(*out.shape[:2], 3), a.reshape(*out.shape[:2], 1)], -1)
    return out


# ---- the persistent cache ---------------------------------------------------------
def _cached(src: Path, op: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    """`make()` once per (source bytes, op), stored as PNG under cache_root()."""
    from PIL import Image

    try:
        digest = hashlib.sha1(src.read_bytes()).hexdigest()
    except OSError as e:
        raise SceneError(src, f"cannot read image ({e.strerror})") from None
    key = hashlib.sha1(f"{digest}|{op}".encode()).hexdigest()
    path = cache_root() / "images" / key[:2] / f"{key}.png"
    if path.is_file():
        try:
            with Image.open(path) as im:
                return np.asarray(im).copy()
        except Exception:
            pass  # a damaged cache entry: remake it
    img = make()
    try:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only home must not stop training
        warn(f"{path}: cannot write the image cache ({e.strerror}); set SPLATLAB_CACHE")
    return img


def _resize(img: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if img.shape[1] == w and img.shape[0] == h:
        return img
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(img).resize((w, h), resample))


# ---- scene assembly ---------------------------------------------------------------
def normalization_for(centers: np.ndarray, rotation: Optional[np.ndarray] = None,
                      offset: Optional[np.ndarray] = None) -> Normalization:
    """Centre on the mean camera centre, scale the farthest one to distance 1. `rotation`,
    `offset` (x' = rotation x + offset) are applied first where a format declares them."""
    R = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    b = np.zeros(3) if offset is None else np.asarray(offset, np.float64)
    c = centers @ R.T + b
    mean = c.mean(0)
    radius = float(np.linalg.norm(c - mean, axis=-1).max()) if len(c) else 0.0
    scale = 1.0 / radius if radius > 1e-9 else 1.0
    return Normalization(scale=scale, translation=scale * (b - mean), rotation=R)


def split_every(n: int, test_every: int) -> tuple[list[int], list[int]]:
    test = [i for i in range(n) if test_every > 0 and i % test_every == 0]
    held = set(test)
    return [i for i in range(n) if i not in held], test


@dataclass
class _Plan:
    """Where image i's pixels come from and what happens to them on load."""

    src: Path
    src_intr: Intrinsics  # the (distorted) camera at the source file's resolution
    work: Intrinsics  # after resize, before undistortion
    final: Intrinsics  # pinhole, what Scene.cameras say


def _choose_images(frames: list[Frame], downscale: int,
                   downscaled: Optional[Callable[[Path, int], Optional[Path]]],
                   factors: list[int]) -> tuple[list[Path], int, list[str]]:
    """Source files and the extra resize factor still needed, preferring a complete
    pre-downscaled folder. Returns (paths, resize, warnings)."""
    def complete(f: int) -> Optional[list[Path]]:
        paths = [fr.image if f == 1 else (downscaled(fr.image, f) if downscaled else None) for fr in frames]
        return paths if all(p is not None and p.is_file() for p in paths) else None

    options = [(downscale, 1), (1, downscale)] + [(m, downscale // m) for m in sorted(factors) if 1 < m < downscale and downscale % m == 0]
    for f, r in options:
        paths = complete(f)
        if paths is not None:
            return paths, r, []
    for m in sorted(factors):
        paths = complete(m) if m > downscale else None
        if paths is not None:
            return paths, 1, [f"full-resolution images are missing; using the 1/{m} copies (downscale {m})"]
    missing = [fr.image for fr in frames if not fr.image.is_file()]
    raise SceneError(missing[0], f"image file is missing ({len(missing)} of {len(frames)} images missing)")


def check_cameras(frames: list[Frame], source: Optional[Path]) -> None:
    """Finite poses with proper rotations, not all at one spot; sane intrinsics. SceneError
    naming the image (and `source`, the file that declared it)."""
    where = f" in {source}" if source else ""
    for fr in frames:
        if fr.c2w.shape != (4, 4) or not np.isfinite(fr.c2w).all():
            raise SceneError(fr.image, f"camera pose is not a finite 4x4 matrix (NaN/Inf){where}")
        if not np.array_equal(fr.c2w[3], [0.0, 0.0, 0.0, 1.0]):
            raise SceneError(fr.image, f"camera pose{where} does not end in the row 0 0 0 1")
        if np.abs(fr.c2w[:3, 3]).max() > MAX_COORD:
            raise SceneError(fr.image, f"camera position{where} is beyond {MAX_COORD:g} (a damaged pose)")
        R = fr.c2w[:3, :3]
        # entries beyond 1.01 cannot be a rotation's: test them first, so R.T @ R cannot overflow
        if np.abs(R).max() > 1.01 or not np.allclose(R.T @ R, np.eye(3), atol=1e-2) or np.linalg.det(R) <= 0:
            raise SceneError(fr.image, f"camera pose{where} is not a rotation plus translation "
                                       "(scaled, sheared or mirrored rotation)")
        i = fr.intr
        if not (0 < i.width <= MAX_SIDE and 0 < i.height <= MAX_SIDE):
            raise SceneError(fr.image, f"image size {i.width}x{i.height}{where} is out of range (1..{MAX_SIDE})")
        f_max = MAX_FOCAL * max(i.width, i.height)
        if not all(np.isfinite([i.fx, i.fy, i.cx, i.cy, *i.dist])) or not (0 < i.fx <= f_max and 0 < i.fy <= f_max):
            raise SceneError(fr.image, f"bad intrinsics{where}: fx={i.fx:g} fy={i.fy:g} cx={i.cx:g} cy={i.cy:g} "
                                       f"(focal lengths must be in (0, {f_max:g}] for a {i.width}x{i.height} image)")
    if len(frames) > 1:
        c = np.stack([fr.c2w[:3, 3] for fr in frames])
        spread = float(np.linalg.norm(c - c.mean(0), axis=1).max())
        if spread <= 1e-9 * max(1.0, float(np.abs(c).max())):
            raise SceneError(source or frames[0].image, f"all {len(frames)} cameras are at the same position "
                                                        "(degenerate poses: nothing to triangulate from)")


def build_scene(
    *,
    fmt: str,
    root: Path,
    frames: list[Frame],
    downscale: int = 1,
    test_every: int = 8,
    test_names: Optional[set[str]] = None,
    train_names: Optional[set[str]] = None,
    background: Optional[tuple[float, float, float]] = None,
    points: Optional[np.ndarray] = None,
    point_colors: Optional[np.ndarray] = None,
    warnings: Optional[list[str]] = None,
    downscaled: Optional[Callable[[Path, int], Optional[Path]]] = None,
    factors: Optional[list[int]] = None,
    rotation: Optional[np.ndarray] = None,
    offset: Optional[np.ndarray] = None,
    source: Optional[Path] = None,
    points_source: Optional[Path] = None,
    masks: Optional[list[Path]] = None,
    meta: Optional[dict] = None,
) -> Scene:
    """Validate frames, plan the pixels, normalize, split, and return a lazy Scene.
    `test_names`: the dataset's own test split by frame name (else every test_every-th);
    `train_names` narrows the training split the same way. `source` is the file errors about
    the poses should name (e.g. transforms.json), `points_source` the one for `points`.
    `masks`: a mask file per frame (0 = ignore the pixel), checked against the image size.
    `meta` adds plain-JSON facts to `Scene.meta` (e.g. "layout")."""
    if downscale < 1:
        raise SceneError(root, f"downscale must be >= 1, got {downscale}")
    if not frames:
        raise SceneError(source or root, "no images with camera poses")
    warnings = list(warnings or [])
    check_cameras(frames, source)

    paths, resize, w = _choose_images(frames, downscale, downscaled, factors or [])
    warnings += w
    plans: list[_Plan] = []
    undist_cache: dict[Intrinsics, Intrinsics] = {}
    source_sizes = []
    for k, (fr, src) in enumerate(zip(frames, paths)):
        sw, sh = image_size(src)
        i = fr.intr
        if src == fr.image:
            if (sw, sh) != (i.width, i.height):
                raise SceneError(src, f"image is {sw}x{sh} but its camera says {i.width}x{i.height}")
            src_intr = i
        else:  # a pre-downscaled copy: its size says the factor
            f = i.width / sw
            if abs(i.width / f - sw) > 1 or abs(i.height / f - sh) > 1.5 or abs(i.height / sh - f) > 0.02 * f:
                raise SceneError(src, f"image is {sw}x{sh}, which is not a downscaled copy of its {i.width}x{i.height} camera")
            src_intr = i.scaled(sw / i.width, sh / i.height, sw, sh)
        source_sizes.append([i.width, i.height])
        if resize > 1:
            tw, th = max(1, round(sw / resize)), max(1, round(sh / resize))
            work = src_intr.scaled(tw / sw, th / sh, tw, th)
        else:
            work = src_intr
        try:
            if work not in undist_cache:
                undist_cache[work] = undistorted(work)
        except ValueError as e:
            raise SceneError(source or fr.image, str(e)) from None
        plans.append(_Plan(src, src_intr, work, undist_cache[work]))
        fw, fh = undist_cache[work].width, undist_cache[work].height
        if min(fw, fh) < MIN_SIDE:
            raise SceneError(src, f"image is {fw}x{fh} pixels as loaded"
                                  + (f" (downscale {downscale})" if downscale > 1 else "")
                                  + f"; training needs at least {MIN_SIDE}x{MIN_SIDE}")
        if masks is not None:
            mw, mh = image_size(masks[k])
            if (mw, mh) not in ((sw, sh), (i.width, i.height)):
                raise SceneError(masks[k], f"mask is {mw}x{mh} but its image {src.name} is {sw}x{sh}")

    def loader(k: int) -> np.ndarray:
        p = plans[k]
        needs_resize = (p.work.width, p.work.height) != (p.src_intr.width, p.src_intr.height)
        needs_undistort = p.work.distorted

        def make() -> np.ndarray:
            img = read_image(p.src)
            if img.shape[1] != p.src_intr.width or img.shape[0] != p.src_intr.height:
                raise SceneError(p.src, f"image is {img.shape[1]}x{img.shape[0]} but its camera says {p.src_intr.width}x{p.src_intr.height}")
            if needs_resize:
                img = _resize(img, p.work.width, p.work.height)
            if needs_undistort:
                img = undistort_image(img, p.work)
            return img

        if not (needs_resize or needs_undistort):
            return make()
        # fisheye keys carry the model: the same numbers mean another lens model
        op = ("v1|" + ("OPENCV_FISHEYE|" if p.work.model in FISHEYE else "") + f"{p.work.width}x{p.work.height}|" + ",".join(f"{v:.9g}" for v in (p.work.fx, p.work.fy, p.work.cx, p.work.cy, *p.work.dist)))
        img = _cached(p.src, op, make)
        if (img.shape[1], img.shape[0]) != (p.final.width, p.final.height):
            raise SceneError(p.src, f"processed image is {img.shape[1]}x{img.shape[0]}, expected {p.final.width}x{p.final.height}")
        return img

    def mask_loader(k: int) -> np.ndarray:
        p = plans[k]
        m = read_mask(masks[k])
        m = _resize(m, p.src_intr.width, p.src_intr.height, nearest=True)
        m = _resize(m, p.work.width, p.work.height, nearest=True)
        if p.work.distorted:
            m = undistort_mask(m, p.work)
        if (m.shape[1], m.shape[0]) != (p.final.width, p.final.height):
            raise SceneError(masks[k], f"processed mask is {m.shape[1]}x{m.shape[0]}, expected {p.final.width}x{p.final.height}")
        return m

    c2w = np.stack([fr.c2w for fr in frames]).astype(np.float64)
    norm = normalization_for(c2w[:, :3, 3], rotation, offset)
    c2w_n = norm.apply_c2w(c2w)
    if points is not None:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        with np.errstate(invalid="ignore"):
            bad = int((~(np.abs(points) <= MAX_COORD).all(1)).sum())
        if bad:
            raise SceneError(points_source or source or root,
                             f"{bad} of {len(points)} initial points are not finite (NaN/Inf or beyond {MAX_COORD:g})")
        points = norm.apply_points(points)
        point_colors = (np.zeros((len(points), 3), np.uint8) if point_colors is None
                        else np.asarray(point_colors).reshape(-1, 3).astype(np.uint8))

    if test_names is not None:
        test_idx = [k for k, fr in enumerate(frames) if fr.name in test_names]
        train_idx = [k for k, fr in enumerate(frames)
                     if fr.name not in test_names and (train_names is None or fr.name in train_names)]
    else:
        train_idx, test_idx = split_every(len(frames), test_every)

    fin = [p.final for p in plans]
    models = Counter(fr.intr.model for fr in frames)
    cams = Cameras(
        camtoworlds=torch.from_numpy(c2w_n).float(),
        fx=torch.tensor([f.fx for f in fin], dtype=torch.float32),
        fy=torch.tensor([f.fy for f in fin], dtype=torch.float32),
        cx=torch.tensor([f.cx for f in fin], dtype=torch.float32),
        cy=torch.tensor([f.cy for f in fin], dtype=torch.float32),
        width=torch.tensor([f.width for f in fin], dtype=torch.long),
        height=torch.tensor([f.height for f in fin], dtype=torch.long),
        model=",".join(sorted(models)),
        distortion=torch.tensor([list(fr.intr.dist) for fr in frames], dtype=torch.float32),
    )
    image_dirs = Counter(str(p.parent) for p in paths)
    return Scene(
        name=scene_name(root),
        format=fmt,
        root=root,
        cameras=cams,
        images=ImageSet([fr.name for fr in frames], loader, background=background,
                        masks=None if masks is None else mask_loader),
        train_idx=train_idx,
        test_idx=test_idx,
        normalization=norm,
        points=points,
        point_colors=point_colors,
        background=background,
        warnings=warnings,
        meta={
            "source_sizes": source_sizes,
            "camera_models": dict(models),
            "image_dir": image_dirs.most_common(1)[0][0],
            "resize_on_load": resize,
            **({"masks": str(Path(masks[0]).parent)} if masks else {}),
            **(meta or {}),
        },
    )
