"""gsplat's own writers (`gsplat.exporter.export_splats`, pure torch, runs on CPU, reached
through `splatlab.renderers.splat.exporters`) for the formats both `splat` and `ply-compressed`
hand to it."""

from __future__ import annotations

from pathlib import Path

from .common import crop_box, original_splats, write_bytes


def export_with_gsplat(target, opts, gsplat_format: str) -> int:
    """Write `opts.output` in gsplat format `gsplat_format`; returns the Gaussian count."""
    from splatlab.renderers.splat.exporters import export_splats

    s = original_splats(target, crop_box(opts, target), where=opts.output)
    data = export_splats(
        means=s["means"], scales=s["scales"], quats=s["quats"], opacities=s["opacities"],
        sh0=s["sh0"], shN=s["shN"], format=gsplat_format,
    )
    write_bytes(Path(opts.output), data)
    return int(s["means"].shape[0])
