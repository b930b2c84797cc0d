"""`splatlab render RUN --path orbit|interpolate|PATH.json --output OUT.mp4`.

Renders a camera path through the model: an MP4 through imageio's ffmpeg plugin
(`splatlab[video]`), or a folder of PNGs when OUT has no video suffix or imageio-ffmpeg
is missing. The JSON path schema is in `camera_paths.py`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from .errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


@dataclass
class RenderArgs:
    """Render a camera-path video of a run (run folder, checkpoint or PLY)."""

    run: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="RUN")]
    """Run folder, checkpoint (.pt) or 3DGS PLY."""
    output: Path
    """OUT.mp4 (or .mov/.mkv/.webm) for a video; any other name is a folder of PNG frames."""
    path: str = "orbit"
    """`orbit` (circle the scene centre), `interpolate` (through the training cameras) or a JSON file."""
    frames: Optional[int] = None
    """Number of frames (default 120; a JSON path's own frame count)."""
    width: Optional[int] = None
    """Output width in pixels (default: the first camera's; keeps the aspect when only one is given)."""
    height: Optional[int] = None
    """Output height in pixels."""
    fps: Optional[float] = None
    """Frames per second (default 30, or the JSON path's)."""
    sh_degree: Optional[int] = None
    """Render with at most this SH degree (default: the model's)."""


def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def build_cameras(target, args: RenderArgs):
    """The path's cameras (normalized frame) and the fps to use."""
    from . import camera_paths

    fps = args.fps
    if args.path in camera_paths.PATHS:
        cams = target.cameras()
        if cams is None:
            raise UserError(f"--path {args.path} needs the run's cameras; a bare PLY has none "
                            "(give a JSON camera path instead)", target.path)
        if args.path == "interpolate" and target.scene_json.get("train_idx"):
            cams = cams[list(target.scene_json["train_idx"])]
        cams = camera_paths.PATHS[args.path](cams, args.frames or 120, args.width, args.height)
    else:
        p = Path(args.path)
        if p.suffix.lower() != ".json":
            raise UserError(f"--path must be orbit, interpolate or a .json file, got {args.path!r}")
        cams, json_fps = camera_paths.from_json(p, target.normalization, args.width, args.height)
        if args.frames is not None and args.frames != len(cams):
            raise UserError(f"--frames {args.frames} disagrees with the {len(cams)} frames in", p)
        fps = fps or json_fps
    return cams, fps or 30.0


def render_frames(target, cams, sh_degree: Optional[int] = None):
    """Yield uint8 H W 3 frames of `target.renderer` seen from `cams` (the SH degree
    applies to renderers that offer `with_render_options`)."""
    import torch

    bg = None
    if target.scene_json is not None and target.scene_json.get("background") is not None:
        bg = torch.tensor([target.scene_json["background"]], dtype=torch.float32)
    renderer = target.renderer
    if sh_degree is not None and hasattr(renderer, "with_render_options"):
        renderer = renderer.with_render_options(sh_degree=sh_degree)
    for i in range(len(cams)):
        cam = cams[i]
        with torch.no_grad():
            out = renderer.render(cam, background=bg)
        yield (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _check_output(out: Path, video: bool) -> None:
    if video and out.is_dir():
        raise UserError("output is a folder; give a video file name", out)
    if not video and out.exists() and not out.is_dir():
        raise UserError("output exists and is not a folder (PNG frames go in a folder)", out)
    if not video and out.is_dir() and any(not (f.name.startswith("frame_") and f.suffix == ".png")
                                          for f in out.iterdir()):
        raise UserError("output folder holds other files; give a new or empty folder", out)
    probe = out.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError("cannot write here (folder missing or not writable)", out)


def run(argv: list[str]) -> int:
    args = tyro.cli(RenderArgs, args=argv, prog="splatlab render", description=RenderArgs.__doc__)
    from rich.progress import Progress

    from .runs import load_target

    out = Path(args.output)
    video = out.suffix.lower() in VIDEO_SUFFIXES
    if video and not _has_ffmpeg():
        out = out.with_suffix("")
        print(f"warning: imageio-ffmpeg is missing (pip install 'splatlab[video]'); writing PNG frames to {out}/",
              file=sys.stderr)
        video = False
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if (args.width is not None and args.width < 1) or (args.height is not None and args.height < 1):
        raise UserError("--width and --height must be positive")
    _check_output(out, video)
    target = load_target(args.run)
    cams, fps = build_cameras(target, args)
    W, H = int(cams.width[0]), int(cams.height[0])
    if video and (W % 2 or H % 2):
        raise UserError(f"H.264 video needs an even width and height, got {W}x{H} (use --width/--height)")

    import imageio.v2 as imageio

    from splatlab.scenes.files import atomic_path

    # Write beside the target, rename at the end: an interrupted render leaves nothing
    # behind and never a broken file under the real name. _check_output allowed
    # replacing an existing frames folder (it holds only our frames).
    with atomic_path(out, directory=not video) as tmp, Progress(transient=True) as bar:
        task = bar.add_task(f"rendering {len(cams)} frames {W}x{H}", total=len(cams))
        if video:
            # macro_block_size=1: keep the exact size instead of ffmpeg-padding to 16.
            with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8,
                                    macro_block_size=1, ffmpeg_log_level="error") as writer:
                for frame in render_frames(target, cams, args.sh_degree):
                    writer.append_data(frame)
                    bar.advance(task)
        else:
            for i, frame in enumerate(render_frames(target, cams, args.sh_degree)):
                imageio.imwrite(tmp / f"frame_{i:05d}.png", frame)
                bar.advance(task)
    print(f"wrote {len(cams)} frames ({W}x{H}{f', {fps:g} fps' if video else ''}) to {out}")
    return 0
