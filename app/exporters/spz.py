"""`--format spz`: Niantic's compressed SPZ (about a tenth of the PLY), read by web viewers."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .common import ExportArgs, check_output, crop_box, original_splats, write_bytes

HELP = "Niantic .spz: compressed (about 10x smaller than PLY), all SH, for web viewers"
SUFFIXES = (".spz",)


@dataclass
class Options(ExportArgs):
    """Niantic SPZ version 3 (gzip, quantized: 24-bit positions, 8-bit everything else),
    SH up to the model's degree. Stored in SPZ's own RUB axes, converted from the dataset's
    original frame, so `splatlab view x.spz` and SPZ viewers both show it as the PLY."""


def export(target, opts: Options) -> str:
    from splatlab.renderers.splat.io import spz_bytes

    check_output(opts.output, SUFFIXES)
    s = original_splats(target, crop_box(opts, target), where=opts.output)
    try:
        data = spz_bytes(s, target.model.sh_degree)
    except ValueError as e:
        raise UserError(str(e), opts.output) from None
    write_bytes(opts.output, data)
    return (f"wrote {len(s['means'])} Gaussians (SH degree {target.model.sh_degree}, "
            f"{len(data) / 1e6:.2f} MB) to {opts.output}")
