"""`splatlab info PATH [--json]`: what a scene folder holds, without decoding its images.

Reports the format, split sizes, image size (the files' own, before undistortion or
downscaling), camera models, an intrinsics summary, the number of initial points, the
scene extent and any warnings. A bare folder of photos is reported as format `images`
with a hint to run `splatlab process`. Writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro


@dataclass
class InfoArgs:
    path: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="[PATH ...]")] = ("demo",)
    """Scene folder (COLMAP, nerfstudio/instant-ngp, Blender, LLFF, photos), `demo`, a run
    folder, a checkpoint, or a PLY/SPZ file; given several (a glob), the newest."""
    json: bool = False
    """Print one JSON object instead of a table."""
    downscale: int = 1
    """Describe the scene as it would load with this downscale factor."""
    format: Annotated[Optional[str], tyro.conf.arg(metavar="NAME", help_behavior_hint="(default: guess)")] = None
    """Read the folder as this format (colmap, nerfstudio, blender, llff) instead of guessing."""
    images: Annotated[Optional[str], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: found)")] = None
    """Images folder (COLMAP, LLFF), relative to the scene folder or the current one."""
    colmap_path: Annotated[Optional[str], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: found)")] = None
    """COLMAP sparse model folder (e.g. colmap/sparse/0), relative to the scene folder or the current one."""


def describe(path: str, downscale: int = 1, format: Optional[str] = None, images: Optional[str] = None,
             colmap_path: Optional[str] = None) -> dict:
    """A plain-JSON summary of the scene at `path`. Warnings go into the summary, not to stderr."""
    from splatlab import scenes

    target = path if path != "demo" else None
    if format is None and images is None and colmap_path is None and scenes.find_format(target) is scenes.images_format:
        return scenes.images_format.describe(path)
    scene = scenes.read_scene(target, downscale=downscale, format=format, images=images, colmap_path=colmap_path)
    cams = scene.cameras
    sizes = Counter(tuple(s) for s in scene.meta.get("source_sizes", []))
    if not sizes:
        sizes = Counter(zip(cams.width.tolist(), cams.height.tolist()))
    loaded = Counter(zip(cams.width.tolist(), cams.height.tolist()))
    models = scene.meta.get("camera_models") or {cams.model: len(cams)}

    def rng(t) -> list[float]:
        return [round(float(t.min()), 3), round(float(t.max()), 3)]

    out = {
        "format": scene.format,
        "path": str(scene.root),
        "num_images": len(cams),
        "num_train": len(scene.train_idx),
        "num_test": len(scene.test_idx),
        "image_size": list(sizes.most_common(1)[0][0]),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()},
        "loaded_size": list(loaded.most_common(1)[0][0]),
        "camera_model": max(models, key=models.get),
        "camera_models": models,
        "intrinsics": {"fx": rng(cams.fx), "fy": rng(cams.fy), "cx": rng(cams.cx), "cy": rng(cams.cy),
                       "undistorted": any(m not in ("PINHOLE", "SIMPLE_PINHOLE") for m in models)
                       and bool(cams.distortion is not None and cams.distortion.abs().sum() > 0)},
        "num_points": 0 if scene.points is None else int(len(scene.points)),
        "extent": round(scene.extent, 6),
        "normalization": scene.normalization.to_json(),
        "background": None if scene.background is None else list(scene.background),
        "warnings": list(scene.warnings),
    }
    for k in ("image_dir", "layout", "masks"):
        if scene.meta.get(k):
            out[k] = scene.meta[k]
    out["name"] = scene.name
    return out


def _print_table(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{info.get('path', '')}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("format", info["format"])
    if info["format"] == "images":
        t.add_row("images", str(info["num_images"]))
        t.add_row("image size", f"{info['image_size'][0]}x{info['image_size'][1]}"
                  + (f"  (mixed: {info['image_sizes']})" if len(info["image_sizes"]) > 1 else ""))
        t.add_row("next step", info["hint"])
    else:
        t.add_row("name", info["name"])
        if info.get("layout"):
            t.add_row("layout", info["layout"])
        t.add_row("images", f"{info['num_images']}  (train {info['num_train']}, test {info['num_test']})")
        if info.get("image_dir"):
            t.add_row("image folder", info["image_dir"] + (f"  (masks: {info['masks']})" if info.get("masks") else ""))
        size = f"{info['image_size'][0]}x{info['image_size'][1]}"
        if len(info["image_sizes"]) > 1:
            size += f"  (mixed: {info['image_sizes']})"
        if info["loaded_size"] != info["image_size"]:
            size += f"  -> loads as {info['loaded_size'][0]}x{info['loaded_size'][1]}"
        t.add_row("image size", size)
        t.add_row("camera model", ", ".join(f"{m} x{n}" for m, n in info["camera_models"].items()))
        intr = info["intrinsics"]
        t.add_row("intrinsics", "  ".join(f"{k} {v[0]:g}" + (f"..{v[1]:g}" if v[1] != v[0] else "")
                                        for k, v in intr.items() if k != "undistorted")
                  + ("  (after undistortion)" if intr["undistorted"] else ""))
        t.add_row("points", str(info["num_points"]))
        t.add_row("extent", f"{info['extent']:.3g} (normalized; scale {info['normalization']['scale']:.4g})")
        if info["background"] is not None:
            t.add_row("background", str(info["background"]))
    for w in info["warnings"]:
        t.add_row("[yellow]warning[/]", w)
    Console().print(t)


def is_model(path: str) -> bool:
    """A run folder, a checkpoint, a PLY or an SPZ: described as a model, not as a scene."""
    from .runs import is_run_dir

    p = Path(path)
    return is_run_dir(p) or (p.is_file() and p.suffix.lower() in (".pt", ".ply", ".spz"))


def describe_model(path: str) -> dict:
    """Gaussian count, SH degree and bounds (original coordinates) of a run, checkpoint or
    PLY, plus the run's step, scene and test metrics when it has them."""
    import numpy as np

    from .runs import load_target

    from splatlab.viewer.splats import centers

    t = load_target(path)
    c = centers(t.renderer)
    means = np.zeros((0, 3)) if c is None else t.normalization.invert_points(c.double().cpu().numpy())
    finite = np.isfinite(means).all(1)
    info = {
        "path": str(path), "format": t.kind, "method": t.method, "preset": t.preset,
        "stats": t.renderer.stats(), **t.renderer.metrics(),
        "sh_degree": getattr(t.renderer, "sh_degree", None),
        "bounds_min": means[finite].min(0).tolist() if finite.any() else None,
        "bounds_max": means[finite].max(0).tolist() if finite.any() else None,
        "step": t.step, "scene": None, "metrics": None, "warnings": [],
    }
    if t.scene_json is not None:
        info["scene"] = {k: t.scene_json.get(k) for k in ("name", "format", "root")}
    if t.run_dir is not None and (Path(t.run_dir) / "metrics.json").exists():
        m = json.loads((Path(t.run_dir) / "metrics.json").read_text())
        info["metrics"] = {k: m.get(k) for k in ("psnr", "ssim", "lpips", "num_test_views", "train_seconds")}
    return info


def _print_model(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=info["path"], show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("kind", info["format"])
    t.add_row("method", info["method"] + (f" (preset {info['preset']})" if info["preset"] else ""))
    for k, v in info["stats"].items():
        sh = f" (SH degree {info['sh_degree']})" if info["sh_degree"] is not None else ""
        t.add_row(k, (f"{v:,}" if isinstance(v, int) else str(v)) + sh)
    if info["bounds_min"] is not None:
        fmt = lambda v: " ".join(f"{x:.3g}" for x in v)  # noqa: E731
        t.add_row("bounds", f"[{fmt(info['bounds_min'])}] .. [{fmt(info['bounds_max'])}] (original coordinates)")
    if info["step"] is not None:
        t.add_row("step", f"{info['step']:,}")
    if info["scene"]:
        t.add_row("scene", f"{info['scene']['name']} ({info['scene']['format']}, {info['scene']['root']})")
    if info["metrics"]:
        m = info["metrics"]
        lp = "unavailable" if m.get("lpips") is None else f"{m['lpips']:.4f}"
        t.add_row("test metrics", f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  LPIPS {lp}  ({m['num_test_views']} views)")
    Console().print(t)


def run(argv: list[str]) -> int:
    from .runs import newest_of

    args = tyro.cli(InfoArgs, args=argv, prog="splatlab info", description=__doc__.split("\n\n")[0])
    args.path = newest_of(list(args.path) or ["demo"], what="path")
    model = args.path != "demo" and is_model(args.path)
    info = describe_model(args.path) if model else describe(args.path, args.downscale, args.format, args.images,
                                                            args.colmap_path)
    if args.json:
        # Warnings go into the object; keep stderr quiet so stdout is the one JSON object.
        sys.stdout.write(json.dumps(info) + "\n")
    elif model:
        _print_model(info)
    else:
        _print_table(info)
    return 0
