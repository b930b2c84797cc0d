"""`--format ply`: the INRIA 3DGS PLY (what most viewers and tools read)."""

from __future__ import annotations

from dataclasses import dataclass

from .common import ExportArgs, check_output, crop_box, write_bytes

HELP = "INRIA 3DGS PLY (binary, all SH); what most viewers and tools read"
SUFFIXES = (".ply",)


@dataclass
class Options(ExportArgs):
    """INRIA 3DGS PLY: binary, all float, SH up to the model's degree, original coordinates."""


def export(target, opts: Options) -> str:
    from splatlab.renderers.splat.io import PlyError, ply_bytes

    check_output(opts.output, SUFFIXES)
    try:
        data = ply_bytes(target.model, target.normalization, crop_box(opts, target), where=opts.output)
    except PlyError as e:
        from ..errors import UserError

        raise UserError(e.problem, e.path) from None
    write_bytes(opts.output, data)
    n = int(data[: data.index(b"end_header")].split(b"element vertex ")[1].split(b"\n")[0])
    return f"wrote {n} Gaussians (SH degree {target.model.sh_degree}) to {opts.output}"
