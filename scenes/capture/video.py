"""Frame extraction for `splatlab process VIDEO`: about N evenly spaced, sharp frames.

The video is decoded once, in order (imageio's ffmpeg plugin, so anything ffmpeg reads).
It is cut into N equal windows of consecutive frames and the sharpest frame of each window
(variance of the Laplacian, on a small grey copy) is kept: motion blur is the commonest
reason a phone video's frames fail to register.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Optional

import numpy as np

from . import CaptureError

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".mts", ".ts"}


def is_video(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image, at most ~640 px wide."""
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / 640)))
    g = rgb[::step, ::step, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def _reader(path: Path):
    import imageio.v2 as imageio

    try:
        return imageio.get_reader(str(path), format="ffmpeg")
    except Exception as e:  # imageio raises a handful of types for "cannot decode"
        raise CaptureError(f"cannot decode this video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "is it a video ffmpeg can read? (pip install imageio-ffmpeg)", path) from None


def frame_count(path: Path) -> int:
    """The number of frames, from the container's duration and rate (exact count if those are missing)."""
    reader = _reader(path)
    try:
        meta = reader.get_meta_data()
        fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
        n = int(round(fps * duration)) if fps > 0 and np.isfinite(duration) and duration > 0 else 0
        if n <= 0:
            n = reader.count_frames()
        return int(n)
    except CaptureError:
        raise
    except Exception as e:
        raise CaptureError(f"cannot decode this video ({type(e).__name__})", path) from None
    finally:
        reader.close()


def extract_frames(
    path: Path,
    out_dir: Path,
    num_frames: int,
    on_progress: Optional[Callable[[int, int], None]] = None,
    jpeg_quality: int = 95,
) -> list[Path]:
    """Write about `num_frames` sharp, evenly spaced frames of `path` as `out_dir/frame_00001.jpg` ...

    `on_progress(decoded, total)` is called as frames are decoded. Returns the written files in order.
    """
    from PIL import Image

    path, out_dir = Path(path), Path(out_dir)
    if num_frames < 1:
        raise CaptureError(f"--num-frames must be at least 1, not {num_frames}", path)
    total = frame_count(path)
    windows = max(1, min(num_frames, total))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def flush(frame: np.ndarray) -> None:
        dst = out_dir / f"frame_{len(written) + 1:05d}.jpg"
        Image.fromarray(frame[..., :3]).save(dst, quality=jpeg_quality)
        written.append(dst)

    reader = _reader(path)
    best, best_score, window = None, -1.0, 0
    i = -1
    try:
        for i, frame in enumerate(reader):
            # The container's frame count can be an estimate: clamp into the last window.
            w = min(windows - 1, i * windows // max(total, 1))
            if w != window and best is not None:
                flush(best)
                best, best_score = None, -1.0
            window = w
            score = sharpness(frame)
            if score > best_score:
                best, best_score = np.asarray(frame).copy(), score
            if on_progress is not None and i % 10 == 0:
                on_progress(i + 1, total)
    except Exception as e:
        if i < 0:
            raise CaptureError(f"cannot decode this video ({type(e).__name__})", path) from None
        # A truncated file: keep what decoded (ffmpeg often fails only at the very end).
    finally:
        reader.close()
    if best is not None:
        flush(best)
    if on_progress is not None:
        on_progress(total, total)
    if not written:
        raise CaptureError("no frames could be decoded from this video", path)
    return written
