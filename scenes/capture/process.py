"""A folder of photos or a video -> a posed COLMAP scene (`splatlab process INPUT`).

The output is a COLMAP dataset folder that `splatlab train` reads directly:

    images/          the photos (copied; EXIF-rotated or converted to JPEG only where needed)
                     or the extracted video frames
    sparse/0/        cameras.bin images.bin points3D.bin: the largest model
    database.db      COLMAP's feature/match database (to rerun COLMAP tools by hand)
    process.json     what ran: options, input fingerprint, registered/total, timings, and
                     what splatlab wrote here (every file and folder, and a random key)

Cameras keep the model COLMAP estimated (SIMPLE_RADIAL): the COLMAP loader undistorts
once and caches, so the photos are stored once, uncropped.

Default output: `processed/<name>-<key>` under `files.cache_root()` ($SPLATLAB_CACHE,
else $XDG_CACHE_HOME/splatlab, else ~/.cache/splatlab), where the key hashes the input's
bytes and the options. A second run with the same input and options reuses it (that is
also how `splatlab train VIDEO` avoids redoing SfM). Nothing is ever written into the
input folder.

`--overwrite` deletes only what splatlab can prove it wrote: process.json lists every
file and folder of the result and a random key, and the same key is kept outside the
folder (`<cache>/owned/`). A folder whose key does not match that record, or that holds
anything not on the list, is refused and nothing in it is deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from ..files import atomic_write_bytes, cache_root
from . import CaptureError

# Suffixes pycolmap reads directly; other formats Pillow reads are converted to JPEG.
PASSTHROUGH = {".jpg", ".jpeg", ".png"}
IMAGE_SUFFIXES = PASSTHROUGH | {".heic", ".heif", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".jp2", ".avif"}
FORMAT_VERSION = 1
WARN_BELOW = 0.70


@dataclass
class ProcessArgs:
    """The options of `splatlab process` (the command parses them with tyro; the
    attribute docstrings are its help)."""

    input: Path
    """A folder of photos (JPEG, PNG, HEIC with pillow-heif, ...) or a video (mp4, mov, ...)."""
    output: Optional[Path] = None
    """Output COLMAP dataset folder. Default: <cache>/processed/<name>-<key>, the cache being
    $SPLATLAB_CACHE, else $XDG_CACHE_HOME/splatlab, else ~/.cache/splatlab."""
    num_frames: int = 150
    """Video only: about this many frames, evenly spaced, the sharpest of each window."""
    matcher: Literal["auto", "exhaustive", "sequential"] = "auto"
    """auto: sequential for video frames or more than 100 photos, else exhaustive."""
    mapper: Literal["auto", "global", "incremental"] = "auto"
    """auto: global (GLOMAP) first, then incremental and relaxed options while few images register."""
    camera: Literal["auto", "single", "per-image"] = "auto"
    """auto: one shared camera per device (same size and EXIF make/model/focal)."""
    max_image_size: int = 640
    """Longest side (pixels) images are downscaled to for feature extraction; poses stay in full resolution."""
    max_num_features: int = 4096
    """SIFT features per image."""
    overwrite: bool = False
    """Replace an existing --output folder made by `splatlab process`: only the files it
    recorded writing there are deleted; a folder holding anything else is refused."""


# ----------------------------------------------------------------------------- input


@dataclass
class Inputs:
    kind: str  # "images" | "video"
    files: list[Path]  # the images, or [video]
    skipped: list[Path]  # files that are not images (folders only)


def scan(input: Path) -> Inputs:
    """Classify INPUT and list its images; raises CaptureError for unusable input."""
    from .video import is_video

    input = Path(input)
    if not input.exists():
        raise CaptureError("does not exist", input)
    if input.is_file():
        if input.suffix.lower() in IMAGE_SUFFIXES:
            raise CaptureError("is a single image; give a folder of at least 3 overlapping photos, or a video", input)
        # Anything else is tried as a video: ffmpeg reads more containers than we list.
        return Inputs("video", [input], [])
    if not input.is_dir():
        raise CaptureError("is neither a folder of photos nor a video file", input)
    images, skipped = [], []
    for p in sorted(input.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        elif is_video(p):
            skipped.append(p)
        elif _pillow_reads(p):
            images.append(p)
        else:
            skipped.append(p)
    if len(images) < 3:
        extra = f" ({len(skipped)} other file{'s' * (len(skipped) != 1)} skipped)" if skipped else ""
        raise CaptureError(f"found {len(images)} image{'s' * (len(images) != 1)}{extra}; structure-from-motion "
                        "needs at least 3 overlapping photos (or pass a video file)", input)
    return Inputs("images", images, skipped)


def _register_heif() -> None:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass


def _pillow_reads(p: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(p) as im:
            return im.format is not None
    except Exception:
        return False


@dataclass
class ImageInfo:
    name: str  # file name in the output images/ folder
    size: tuple[int, int]  # (width, height) as stored in images/ (upright)
    device: tuple  # EXIF (make, model, focal length); () when absent


def _decode_check(p: Path):
    """Open and fully decode `p` (cheaply: JPEG DCT scaling), or raise CaptureError naming it."""
    from PIL import Image, ImageOps

    if p.suffix.lower() in {".heic", ".heif", ".avif"}:
        _register_heif()
    try:
        im = Image.open(p)
    except Exception as e:
        hint = "; HEIC needs `pip install pillow-heif`" if p.suffix.lower() in {".heic", ".heif"} else ""
        raise CaptureError(f"cannot read this image ({type(e).__name__}){hint}", p) from None
    try:
        exif = im.getexif()
        orientation = int(exif.get(0x0112, 1) or 1)
        w, h = im.size
        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        im.load()  # raises on truncated or corrupt data
    except Exception as e:
        raise CaptureError(f"cannot read this image ({type(e).__name__}: {e})", p) from None
    finally:
        im.close()
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    make, model = str(exif.get(0x010F, "")).strip(), str(exif.get(0x0110, "")).strip()
    focal = exif.get_ifd(0x8769).get(0x920A) if (make or model) else None
    device = (make, model, float(focal) if focal else None) if (make or model) else ()
    return (w, h), orientation, device


def stage_images(files: list[Path], dst: Path, on_progress=None) -> list[ImageInfo]:
    """Copy the photos into `dst` (never linking: the output must not alias the input).

    JPEG/PNG are copied byte for byte (EXIF focal length kept for the camera prior);
    EXIF-rotated or other formats are rewritten upright as JPEG, so pycolmap and every
    Pillow-based reader see the same pixels."""
    from PIL import Image, ImageOps

    dst.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    infos = []
    for i, p in enumerate(files):
        size, orientation, device = _decode_check(p)
        passthrough = p.suffix.lower() in PASSTHROUGH and orientation == 1
        name = p.name if passthrough else p.stem + ".jpg"
        if name.lower() in taken:
            name = p.name + ".jpg"
        taken.add(name.lower())
        if passthrough:
            shutil.copyfile(p, dst / name)
        else:
            with Image.open(p) as im:
                exif = im.getexif()
                up = ImageOps.exif_transpose(im).convert("RGB")
                exif.pop(0x0112, None)
                up.save(dst / name, quality=95, exif=exif.tobytes())
        infos.append(ImageInfo(name, size, device))
        if on_progress is not None:
            on_progress(i + 1, len(files))
    return infos


def camera_groups(infos: list[ImageInfo], mode: str = "auto", where: Optional[Path] = None) -> list[list[str]]:
    """Names that share one camera. auto: same size and EXIF make/model/focal; images with
    no EXIF share a camera only when every image is one size (video frames, one device)."""
    if mode == "single":
        sizes = {i.size for i in infos}
        if len(sizes) > 1:
            raise CaptureError(f"--camera single needs images of one size, found {len(sizes)} sizes "
                            "(use --camera auto)", where)
        return [[i.name for i in infos]]
    if mode == "per-image":
        return [[i.name] for i in infos]
    one_size = len({i.size for i in infos}) == 1
    groups: dict[tuple, list[str]] = {}
    for k, i in enumerate(infos):
        if i.device:
            key = ("exif", i.size, i.device)
        elif one_size:
            key = ("size", i.size)
        else:
            key = ("alone", k)
        groups.setdefault(key, []).append(i.name)
    return list(groups.values())


# ----------------------------------------------------------------------------- cache


def _file_digest(p: Path) -> str:
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(inputs: Inputs, args: ProcessArgs) -> str:
    """Hash of the input files' bytes and the options that change the result."""
    h = hashlib.sha1(f"splatlab-process-v{FORMAT_VERSION}".encode())
    for p in inputs.files:
        h.update(f"{p.name}\0{p.stat().st_size}\0{_file_digest(p)}\n".encode())
    h.update(json.dumps(_options(args, inputs.kind), sort_keys=True).encode())
    return h.hexdigest()[:12]


def _options(args: ProcessArgs, kind: str) -> dict:
    opts = {k: v for k, v in asdict(args).items() if k not in ("input", "output", "overwrite")}
    if kind != "video":
        opts.pop("num_frames")
    return opts


def default_output(input: Path, key: str) -> Path:
    stem = Path(input).resolve().stem or "scene"
    return cache_root() / "processed" / f"{stem}-{key}"


def _is_done(out: Path, key: str) -> bool:
    try:
        meta = json.loads((out / "process.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("key") == key and (out / "sparse" / "0" / "images.bin").is_file()


def _check_output(input: Path, out: Path, key: str, overwrite: bool) -> bool:
    """True when `out` already holds this result. Refuses outputs inside the input folder,
    folders that `splatlab process` did not make, and (with --overwrite) folders it cannot
    prove it made or that hold anything else."""
    src = input.resolve() if input.is_dir() else None
    res = out.resolve()
    if src is not None and (res == src or src in res.parents):
        raise CaptureError("the output folder is inside the input folder; choose an --output elsewhere "
                           "(nothing is ever written into the input)", out)
    if _is_done(out, key) and not overwrite:
        return True
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CaptureError("exists and was not made by `splatlab process`; choose another --output", out)
    if out.exists() and any(out.iterdir()):
        if not (out / "process.json").is_file():
            raise CaptureError("exists and was not made by `splatlab process`; choose another --output", out)
        if not overwrite:
            raise CaptureError("holds a `splatlab process` result for other input or options; "
                               "pass --overwrite to replace it", out)
        owned_entries(out)
    return False


# ----------------------------------------------------------------------------- ownership


def _ledger(out: Path) -> Path:
    """Where the key of the result at `out` is kept: outside the folder, so a process.json
    copied or typed into some other folder cannot vouch for that folder."""
    digest = hashlib.sha256(str(out.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_root() / "owned" / digest


def _written(folder: Path) -> tuple[list[str], list[str]]:
    """Every file and folder under `folder` (relative POSIX paths), sorted."""
    files, folders = [], []
    for root, dirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        folders += [(rel / d).as_posix() for d in dirs]
        files += [(rel / n).as_posix() for n in names]
    return sorted(files), sorted(folders)


def _safe_relative(entries, where: Path) -> list[str]:
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise CaptureError("process.json's record of what splatlab wrote is damaged; nothing was deleted "
                           "(remove the folder yourself or choose another --output)", where)
    for e in entries:
        p = Path(e)
        if not e or p.is_absolute() or ".." in p.parts:
            raise CaptureError(f"process.json lists {e!r}, which is not inside the folder; nothing was deleted", where)
    return entries


def owned_entries(out: Path) -> tuple[list[str], list[str]]:
    """(files, folders) that `splatlab process` wrote in `out`, after checking its key
    against the record kept outside the folder and that the folder holds nothing else.
    Raises CaptureError (and deletes nothing) otherwise."""
    meta_path = out / "process.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise CaptureError("process.json is unreadable, so splatlab cannot tell what it wrote here; "
                           "nothing was deleted (remove the folder yourself or choose another --output)", out) from None
    written = meta.get("written") if isinstance(meta, dict) else None
    if not isinstance(written, dict) or not isinstance(written.get("key"), str):
        raise CaptureError("process.json has no record of what splatlab wrote here (another program or an "
                           "older splatlab); --overwrite deletes only what it can prove it wrote, so nothing "
                           "was deleted: remove the folder yourself or choose another --output", out)
    try:
        recorded = json.loads(_ledger(out).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str) or not hmac.compare_digest(recorded, written["key"]):
        raise CaptureError("its process.json does not match splatlab's record of the results it wrote here "
                           "(copied, moved, or not made by `splatlab process`); nothing was deleted: remove "
                           "the folder yourself or choose another --output", out)
    files = set(_safe_relative(written.get("files"), out))
    folders = set(_safe_relative(written.get("folders"), out))
    extra = []
    for root, dirs, names in os.walk(out):
        rel = Path(root).relative_to(out)
        for d in dirs:
            r = (rel / d).as_posix()
            if r not in folders or (Path(root) / d).is_symlink():
                extra.append(r + "/")
        for n in names:
            r = (rel / n).as_posix()
            if r not in files or (Path(root) / n).is_symlink():
                extra.append(r)
        dirs[:] = [d for d in dirs if (rel / d).as_posix() in folders and not (Path(root) / d).is_symlink()]
    if extra:
        extra.sort()
        raise CaptureError(f"holds {len(extra)} entr{'ies' if len(extra) != 1 else 'y'} that `splatlab process` "
                           f"did not write (e.g. {extra[0]}); --overwrite deletes only its own files, so nothing "
                           "was deleted: move them out or choose another --output", out)
    return sorted(files), sorted(folders)


def _remove_owned(out: Path) -> None:
    """Delete the previous result's recorded files and folders (checked again now: the
    folder may have changed while SfM ran), leaving `out` empty."""
    files, folders = owned_entries(out)
    for f in files:
        try:
            (out / f).unlink()
        except FileNotFoundError:
            pass
    for d in sorted(folders, key=lambda d: d.count("/"), reverse=True):
        try:
            (out / d).rmdir()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- progress


class RichReporter:
    """One bar (or spinner) per stage on a terminal; one line per finished stage otherwise."""

    def __init__(self, console):
        self.console = console
        self.live = console.is_terminal
        self._progress = None
        self._task = None
        self._name = ""
        self._t0 = 0.0

    def stage(self, name: str, total: Optional[int] = None) -> None:
        self._name, self._t0 = name, time.perf_counter()
        if not self.live:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self._progress = Progress(SpinnerColumn(), TextColumn("[bold blue]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                  transient=True)
        self._task = self._progress.add_task(name, total=total)
        self._progress.start()

    def update(self, completed: int, note: str = "", total: Optional[int] = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, **({"total": total} if total else {}))

    def end(self, note: str = "") -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        dt = time.perf_counter() - self._t0
        self.console.print(f"[green]✓[/] {self._name:<34} {dt:6.1f} s  {note}")


# ----------------------------------------------------------------------------- pipeline


@dataclass
class ProcessResult:
    output: Path
    cached: bool
    meta: dict


def process(args: ProcessArgs, console=None) -> ProcessResult:
    """Run (or reuse) SfM for `args.input`; return where the COLMAP dataset is."""
    from rich.console import Console

    from .sfm import SfmOptions, run_sfm

    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    input = Path(args.input).expanduser()
    inputs = scan(input)
    if args.num_frames < 3 and inputs.kind == "video":
        raise CaptureError(f"--num-frames must be at least 3, not {args.num_frames}", input)
    key = cache_key(inputs, args)
    out = Path(args.output).expanduser() if args.output is not None else default_output(input, key)
    if _check_output(input, out, key, args.overwrite):
        meta = json.loads((out / "process.json").read_text())
        console.print(f"reusing {out} (same input and options; registered "
                      f"{meta['registered']}/{meta['total']})")
        return ProcessResult(out, True, meta)

    if inputs.skipped:
        console.print(f"[yellow]warning:[/] skipped {len(inputs.skipped)} file"
                      f"{'s' * (len(inputs.skipped) != 1)} that are not images "
                      f"(e.g. {inputs.skipped[0].name}) in {input}")
    report = RichReporter(console)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    # Build in a sibling temp folder and rename at the end: a crash never leaves a
    # folder that looks like a finished dataset.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()  # a fresh name: nothing that was there is touched
    try:
        images = tmp / "images"
        t = time.perf_counter()
        if inputs.kind == "video":
            from .video import extract_frames

            report.stage("frames", None)
            frames = extract_frames(inputs.files[0], images, args.num_frames,
                                    on_progress=lambda i, n: report.update(i, total=n))
            report.end(f"{len(frames)} frames")
            if len(frames) < 3:
                raise CaptureError(f"only {len(frames)} frame{'s' * (len(frames) != 1)} could be extracted; "
                                "structure-from-motion needs at least 3", input)
            from PIL import Image

            with Image.open(frames[0]) as im:
                size = im.size
            infos = [ImageInfo(f.name, size, ()) for f in frames]
            timings["frames"] = time.perf_counter() - t
        else:
            report.stage("copy images", len(inputs.files))
            infos = stage_images(inputs.files, images, on_progress=lambda i, n: report.update(i))
            report.end(f"{len(infos)} images")
            timings["copy"] = time.perf_counter() - t
        groups = camera_groups(infos, args.camera, input)
        opts = SfmOptions(matcher=args.matcher, mapper=args.mapper, max_image_size=args.max_image_size,
                          max_num_features=args.max_num_features, ordered=inputs.kind == "video")
        result, attempts = run_sfm(images, groups, tmp / "mapping", tmp / "database.db", opts, report)
        total = len(infos)
        if args.camera == "auto" and len(groups) < total and (result is None or result.registered < WARN_BELOW * total):
            # A shared camera is a strong constraint (the reported 2/29 case): when it goes
            # wrong, one camera per image is the relaxed retry. It costs a second extraction.
            got = 0 if result is None else result.registered
            console.print(f"[yellow]only {got}/{total} registered with shared cameras; retrying with one camera per image[/]")
            retry_db = tmp / "database-per-image.db"
            retry, more = run_sfm(images, camera_groups(infos, "per-image"), tmp / "mapping", retry_db,
                                  opts, report)
            for a in more:
                a.mapper += ", per-image cameras"
            attempts = attempts + more
            if retry is not None and (result is None or retry.registered > result.registered):
                result = retry
                result.mapper += ", per-image cameras"
                result.attempts = attempts
                os.replace(retry_db, tmp / "database.db")  # the database that matches sparse/0
            else:
                retry_db.unlink(missing_ok=True)
        if result is None or result.registered < 3:
            got = 0 if result is None else result.registered
            raise CaptureError(
                f"structure-from-motion posed {got} of {total} images (needs at least 3): the photos need "
                "more overlap (each scene point in 3+ photos), texture and a static scene; try "
                + ("more --num-frames or a slower, steadier video" if inputs.kind == "video"
                   else "--matcher exhaustive, --max-image-size 1024, or more photos"), input)
        timings.update(result.timings)
        t = time.perf_counter()
        report.stage("write sparse/0")
        rec = result.reconstruction
        sparse = tmp / "sparse" / "0"
        sparse.mkdir(parents=True)
        rec.write(sparse)
        shutil.rmtree(tmp / "mapping", ignore_errors=True)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        meta = {
            "version": FORMAT_VERSION,
            "key": key,
            "input": str(input.resolve()),
            "kind": inputs.kind,
            "options": _options(args, inputs.kind),
            "skipped_files": len(inputs.skipped),
            "total": total,
            "registered": result.registered,
            "cameras": result.num_cameras,
            "points": int(rec.num_points3D()),
            "mean_reprojection_error": float(rec.compute_mean_reprojection_error()),
            "matcher": result.matcher,
            "mapper": result.mapper,
            "attempts": [asdict(a) for a in attempts],
            "seconds": {k: round(v, 2) for k, v in timings.items()},
        }
        files, folders = _written(tmp)
        meta["written"] = {"key": secrets.token_hex(16), "files": sorted(files + ["process.json"]),
                           "folders": folders}
        atomic_write_bytes(tmp / "process.json", (json.dumps(meta, indent=2) + "\n").encode())
        report.end(f"{meta['registered']} images, {meta['points']} points")
        if out.exists():
            _remove_owned(out)  # only what the previous run recorded (checked against its key)
        try:
            atomic_write_bytes(_ledger(out), (json.dumps({"path": str(out.resolve()), "key": meta["written"]["key"]})
                                              + "\n").encode())
        except OSError as e:
            console.print(f"[yellow]warning:[/] {_ledger(out)}: cannot record this result ({e.strerror}); "
                          "`--overwrite` will not be able to replace it")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _summary(console, out, meta)
    return ProcessResult(out, False, meta)


def _summary(console, out: Path, meta: dict) -> None:
    reg, total = meta["registered"], meta["total"]
    s = meta["seconds"]
    stages = "  ".join(f"{k} {s[k]:.1f}s" for k in ("frames", "copy", "extract", "match", "map", "write") if k in s)
    console.print(f"[bold]registered {reg}/{total}[/] images ({meta['mapper']} mapper, {meta['matcher']} matching, "
                  f"{meta['cameras']} camera{'s' * (meta['cameras'] != 1)}), {meta['points']:,} points, "
                  f"mean reprojection error {meta['mean_reprojection_error']:.2f} px")
    console.print(f"time: {stages}  (total {s['total']:.1f}s)")
    if reg < WARN_BELOW * total:
        console.print(f"[yellow]warning:[/] only {reg / total:.0%} of the images were posed; the others are left "
                      "out of training. More overlap between photos (or a slower video) helps.")


def posed_dataset(
    input: Path,
    *,
    output: Optional[Path] = None,
    num_frames: int = 150,
    matcher: str = "auto",
    mapper: str = "auto",
    max_image_size: int = 640,
    console=None,
) -> Path:
    """A COLMAP dataset folder for a bare photo folder or a video, made by `process` once
    and then reused (keyed by the images' bytes and these options). Writes nothing into `input`."""
    args = ProcessArgs(input=Path(input), output=output, num_frames=num_frames, matcher=matcher,
                       mapper=mapper, max_image_size=max_image_size)
    return process(args, console=console).output
