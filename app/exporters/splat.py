"""`--format splat`: antimatter15's .splat (32 bytes a Gaussian: no view-dependent colour)."""

from __future__ import annotations

from dataclasses import dataclass

from ._gsplat_formats import export_with_gsplat
from .common import ExportArgs, check_output

HELP = "antimatter15 .splat (via gsplat): compact, base colour only"
SUFFIXES = (".splat",)


@dataclass
class Options(ExportArgs):
    """antimatter15 .splat via gsplat's exporter: base colour only (SH degree 0), 8-bit
    colour/opacity/rotation, Morton-sorted. Original coordinates."""


def export(target, opts: Options) -> str:
    check_output(opts.output, SUFFIXES)
    n = export_with_gsplat(target, opts, "splat")
    return f"wrote {n} Gaussians to {opts.output}"
