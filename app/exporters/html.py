"""`--format html`: one self-contained HTML file that shows the splats in any browser."""

from __future__ import annotations

from dataclasses import dataclass


from ..errors import UserError
from .common import ExportArgs, check_output, crop_box

HELP = "self-contained HTML viewer (browser-rendered splats, colour only)"
SUFFIXES = (".html", ".htm")


@dataclass
class Options(ExportArgs):
    """A single HTML file (viser's client plus the scene, no server needed) that draws the
    Gaussians in WebGL: base colour only (view-dependent SH is dropped), starting from the
    run's first camera. The crop box is --crop-min/--crop-max, else the one saved by
    `splatlab view` in <run>/viewer_crop.json when it is enabled."""


def _crop_normalized(target, opts: Options):
    crop = crop_box(opts, target)  # original coordinates
    if crop is None:
        return None
    return target.normalization.apply_box(crop)


def export(target, opts: Options) -> str:
    from splatlab.viewer.html import build_html
    from splatlab.viewer.splats import crop_renderer, num_primitives

    check_output(opts.output, SUFFIXES)
    crop = _crop_normalized(target, opts)
    n = num_primitives(crop_renderer(target.renderer, crop))
    if n == 0:
        raise UserError("the crop box contains no Gaussians", opts.output)
    bg = (target.scene_json or {}).get("background")
    build_html(target.renderer, opts.output, cameras=target.cameras(), background=bg, crop=crop)
    size = opts.output.stat().st_size / 1e6
    return f"wrote {opts.output} ({n:,} Gaussians, {size:.1f} MB, self-contained HTML)"
