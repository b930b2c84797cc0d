"""Structure-from-motion with pycolmap, in process: extract -> match -> map.

Choices (measured on 2 CPU cores; see `splatlab process --help` and the issue report):
- SIFT on images downscaled to `max_image_size` (default 640) with COLMAP's usual
  upsampled first octave: 6x faster than 1024 px on sacre_coeur and every target set
  still registers fully.
- Cameras: one per device, i.e. per group of images with the same size and EXIF
  make/model/focal length; images without EXIF share one only when the whole set is a
  single size (video frames, one phone's burst), otherwise each has its own.
- Mapping: the global mapper (GLOMAP inside COLMAP) first: it registered every image on
  every set we tried, where the incremental mapper sometimes splits a set into several
  models. When too few images register, the other mapper runs, then relaxed incremental
  options; the model with the most registered images wins (then the lowest error).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

# Below this registered fraction the auto mapper tries the next strategy.
RETRY_BELOW = 0.95
RELAX_BELOW = 0.70
EXHAUSTIVE_MAX_IMAGES = 100


@runtime_checkable
class Reporter(Protocol):
    """Progress sink; `process.RichReporter` implements it with rich."""

    def stage(self, name: str, total: Optional[int] = None) -> None: ...
    def update(self, completed: int, note: str = "") -> None: ...
    def end(self, note: str = "") -> None: ...


class _Silent:
    def stage(self, name, total=None):
        pass

    def update(self, completed, note=""):
        pass

    def end(self, note=""):
        pass


@dataclass
class SfmOptions:
    matcher: str = "auto"  # auto | exhaustive | sequential
    mapper: str = "auto"  # auto | global | incremental
    max_image_size: int = 640
    max_num_features: int = 4096
    camera_model: str = "SIMPLE_RADIAL"
    sequential_overlap: int = 10
    ordered: bool = False  # images are consecutive video frames (sequential matching pays)


@dataclass
class Attempt:
    mapper: str
    registered: int
    models: list[int]
    seconds: float


@dataclass
class SfmResult:
    reconstruction: object  # pycolmap.Reconstruction, the largest model
    num_images: int
    num_cameras: int
    matcher: str
    mapper: str
    attempts: list[Attempt] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def registered(self) -> int:
        return int(self.reconstruction.num_reg_images())


def _pycolmap():
    try:
        import pycolmap
    except ImportError:
        from . import CaptureError

        raise CaptureError("structure-from-motion needs pycolmap: pip install 'pycolmap>=3.10'") from None
    pycolmap.logging.minloglevel = 2  # errors only: our progress display says the rest
    return pycolmap


def _device(pycolmap):
    return pycolmap.Device.cuda if pycolmap.has_cuda else pycolmap.Device.cpu


def extract(db: Path, image_dir: Path, groups: list[list[str]], opts: SfmOptions, report: Reporter) -> int:
    """SIFT features for every image; each group of >1 names shares one camera. Returns #cameras."""
    pycolmap = _pycolmap()
    eo = pycolmap.FeatureExtractionOptions()
    eo.max_image_size = opts.max_image_size
    eo.sift.max_num_features = opts.max_num_features
    eo.use_gpu = bool(pycolmap.has_cuda)
    total = sum(len(g) for g in groups)
    report.stage("extract", total)
    done = 0
    singles = [g[0] for g in groups if len(g) == 1]
    shared = [g for g in groups if len(g) > 1]
    # Small chunks so the progress bar moves; a group's later chunks reuse its camera.
    chunk = max(4, math.ceil(total / 20))

    def run(names, mode, camera_id=-1):
        nonlocal done
        ro = pycolmap.ImageReaderOptions()
        ro.camera_model = opts.camera_model
        ro.existing_camera_id = camera_id
        pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=mode,
                                  reader_options=ro, extraction_options=eo, device=_device(pycolmap))
        done += len(names)
        report.update(done)

    for names in shared:
        camera_id = -1
        for i in range(0, len(names), chunk):
            run(names[i:i + chunk], pycolmap.CameraMode.SINGLE, camera_id)
            if camera_id == -1:
                with pycolmap.Database.open(db) as d:
                    camera_id = max(c.camera_id for c in d.read_all_cameras())
    for i in range(0, len(singles), chunk):
        run(singles[i:i + chunk], pycolmap.CameraMode.PER_IMAGE)
    with pycolmap.Database.open(db) as d:
        num_cameras, num_images, num_kp = d.num_cameras(), d.num_images(), d.num_keypoints()
    report.end(f"{num_images} images, {num_cameras} camera{'s' * (num_cameras != 1)}, "
               f"{num_kp // max(num_images, 1)} features/image")
    return num_cameras


def choose_matcher(opts: SfmOptions, num_images: int) -> str:
    if opts.matcher != "auto":
        return opts.matcher
    if opts.ordered or num_images > EXHAUSTIVE_MAX_IMAGES:
        return "sequential"
    return "exhaustive"


def match(db: Path, num_images: int, kind: str, opts: SfmOptions, report: Reporter) -> None:
    pycolmap = _pycolmap()
    mo = pycolmap.FeatureMatchingOptions()
    mo.use_gpu = bool(pycolmap.has_cuda)
    if kind == "exhaustive":
        report.stage(f"match (exhaustive, {num_images * (num_images - 1) // 2} pairs)")
        pycolmap.match_exhaustive(db, matching_options=mo, device=_device(pycolmap))
    elif kind == "sequential":
        po = pycolmap.SequentialPairingOptions()
        po.overlap = opts.sequential_overlap if opts.ordered else max(opts.sequential_overlap, 20)
        po.quadratic_overlap = True
        report.stage(f"match (sequential, overlap {po.overlap})")
        pycolmap.match_sequential(db, matching_options=mo, pairing_options=po, device=_device(pycolmap))
    else:
        raise ValueError(f"unknown matcher {kind!r}")
    with pycolmap.Database.open(db) as d:
        pairs = d.num_verified_image_pairs()
    report.end(f"{pairs} image pairs matched")


def _global(pycolmap, db, image_dir, out, relaxed):
    o = pycolmap.GlobalPipelineOptions()
    if relaxed:
        o.min_num_matches = 10
        o.mapper.track_min_num_views_per_track = 2
    return pycolmap.global_mapping(db, image_dir, out, o)


def _incremental(pycolmap, db, image_dir, out, relaxed, on_image):
    o = pycolmap.IncrementalPipelineOptions()
    o.min_model_size = 3  # small captures: keep a 3..9-image model instead of nothing
    if relaxed:
        o.min_num_matches = 10
        o.init_num_trials = 400
        o.mapper.init_min_num_inliers = 50
        o.mapper.init_min_tri_angle = 8.0
        o.mapper.abs_pose_min_num_inliers = 15
        o.mapper.abs_pose_min_inlier_ratio = 0.15
        o.mapper.max_reg_trials = 5
    return pycolmap.incremental_mapping(db, image_dir, out, o, next_image_callback=on_image)


def plan(mapper: str) -> list[str]:
    """The strategies to try, in order, for `--mapper`."""
    return {
        "auto": ["global", "incremental", "incremental-relaxed", "global-relaxed"],
        "global": ["global", "global-relaxed"],
        "incremental": ["incremental", "incremental-relaxed"],
    }[mapper]


def map_(db: Path, image_dir: Path, work: Path, num_images: int, opts: SfmOptions,
         report: Reporter) -> tuple[Optional[object], str, list[Attempt]]:
    """Run mappers until enough images register; return (largest model or None, its mapper, attempts)."""
    pycolmap = _pycolmap()
    best, best_name, attempts = None, "", []

    def score(rec):
        return (rec.num_reg_images(), -rec.compute_mean_reprojection_error())

    for name in plan(opts.mapper):
        frac = 0.0 if best is None else best.num_reg_images() / num_images
        relaxed = name.endswith("-relaxed")
        if best is not None and (frac >= RETRY_BELOW or (relaxed and frac >= RELAX_BELOW)):
            break
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        report.stage(f"map ({name})", num_images)
        t = time.perf_counter()
        if name.startswith("global"):
            models = _global(pycolmap, db, image_dir, out, relaxed)
        else:
            count = [0]

            def on_image():
                count[0] += 1
                report.update(min(count[0] + 1, num_images))

            models = _incremental(pycolmap, db, image_dir, out, relaxed, on_image)
        recs = sorted(models.values(), key=score, reverse=True)
        sizes = [int(r.num_reg_images()) for r in recs]
        attempts.append(Attempt(name, sizes[0] if sizes else 0, sizes, time.perf_counter() - t))
        report.update(sizes[0] if sizes else 0)
        report.end(f"{sizes[0] if sizes else 0}/{num_images} registered"
                   + (f" (models: {', '.join(map(str, sizes))})" if len(sizes) > 1 else ""))
        if recs and (best is None or score(recs[0]) > score(best)):
            best, best_name = recs[0], name
    return best, best_name, attempts


def run_sfm(image_dir: Path, groups: list[list[str]], work: Path, db: Path, opts: SfmOptions,
            report: Optional[Reporter] = None) -> tuple[Optional[SfmResult], list[Attempt]]:
    """Extract, match and map the images of `groups` (names relative to `image_dir`).

    `db` (the COLMAP database) is created fresh; `work` holds scratch models. Returns the
    result (None if no model was found) and the mapping attempts."""
    report = report or _Silent()
    pycolmap = _pycolmap()
    if db.exists():
        db.unlink()
    pycolmap.Database.open(db).close()
    num_images = sum(len(g) for g in groups)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    num_cameras = extract(db, image_dir, groups, opts, report)
    timings["extract"] = time.perf_counter() - t
    kind = choose_matcher(opts, num_images)
    t = time.perf_counter()
    match(db, num_images, kind, opts, report)
    timings["match"] = time.perf_counter() - t
    t = time.perf_counter()
    rec, mapper, attempts = map_(db, image_dir, work, num_images, opts, report)
    timings["map"] = time.perf_counter() - t
    if rec is None:
        return None, attempts
    return SfmResult(rec, num_images, num_cameras, kind, mapper, attempts, timings), attempts
