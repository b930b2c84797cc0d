"""`--format ply-compressed`: SuperSplat/PlayCanvas compressed PLY (chunked, quantized)."""

from __future__ import annotations

from dataclasses import dataclass

from ._gsplat_formats import export_with_gsplat
from .common import ExportArgs, check_output

HELP = "SuperSplat compressed PLY (via gsplat): chunked, quantized"
SUFFIXES = (".ply",)


@dataclass
class Options(ExportArgs):
    """Compressed PLY (SuperSplat) via gsplat's exporter: 256-Gaussian chunks, positions
    11/10/11 bits, 8-bit SH; drops Gaussians with opacity < 1/255. Use a `.compressed.ply`
    name so viewers recognise it. Original coordinates."""


def export(target, opts: Options) -> str:
    check_output(opts.output, SUFFIXES)
    n = export_with_gsplat(target, opts, "ply_compressed")
    return f"wrote {n} Gaussians (before gsplat's opacity filter) to {opts.output}"
