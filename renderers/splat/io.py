"""3DGS PLY files: `write_ply` (INRIA layout) and `read_ply` (INRIA, gsplat, nerfstudio, ...),
plus the frame change back to the dataset's original coordinates that every export uses.

INRIA layout (binary little-endian, all float32, one `vertex` element):
    x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3
normals zero, opacity a logit, scales log, rot a wxyz quaternion (need not be unit),
f_rest channel-major: all K-1 red coefficients, then green, then blue.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from splatlab.rasterizer.sh import sh_bases
from splatlab.scenes.files import atomic_write_bytes
from splatlab.scenes.geometry import Box, Normalization, quat_multiply, rotmat_to_quat
from splatlab.scenes.types import SceneError

from .model import SplatModel

# f_rest count per SH degree: 3 channels x (K - 1) bases.
F_REST_COUNT = {0: 0, 1: 9, 2: 24, 3: 45}


class PlyError(SceneError):
    """A PLY that cannot be read or written as 3D Gaussians (one line naming the file)."""


def ply_property_names(sh_degree: int) -> list[str]:
    """The INRIA vertex properties, in file order, for `sh_degree` 0..3."""
    if sh_degree not in F_REST_COUNT:
        raise ValueError(f"SH degree must be 0..3, got {sh_degree}")
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(F_REST_COUNT[sh_degree])]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def ply_header(sh_degree: int, n: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {p}" for p in ply_property_names(sh_degree)]
    lines += ["end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


# ---- the frame change --------------------------------------------------------------


def sh_rotation_matrices(R: Float[np.ndarray, "3 3"], degree: int) -> list[Tensor]:
    """Per band l = 1..degree, the (2l+1)x(2l+1) matrix M_l with
    Y_l(R d) = Y_l(d) @ M_l (row vectors), found by least squares on sample directions:
    each band is closed under rotation, so the fit is exact to float64 rounding."""
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(256, 3, generator=g, dtype=torch.float64), dim=-1)
    Rt = torch.as_tensor(np.asarray(R, dtype=np.float64))
    # In the rasterizer's own basis (signs and order matter for the matrices).
    A, B = sh_bases(degree, d), sh_bases(degree, d @ Rt.T)
    mats = []
    for l in range(1, degree + 1):
        sl = slice(l * l, (l + 1) * (l + 1))
        mats.append(torch.linalg.lstsq(A[:, sl], B[:, sl]).solution)
    return mats


def transform_splats(splats: dict[str, Tensor], sh_degree: int, T: Normalization) -> dict[str, Tensor]:
    """Raw splat params mapped by the similarity x' = scale * R @ x + translation:
    means mapped, log-scales shifted by log(scale), quats pre-multiplied by R, SH bands
    rotated (view directions turn with R). Returns new tensors, float32."""
    R = np.asarray(T.rotation, dtype=np.float64)
    if abs(np.linalg.det(R) - 1.0) > 1e-4 or not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
        raise ValueError("normalization rotation must be a proper rotation matrix")
    splats = {k: v.detach() for k, v in splats.items()}
    dev = splats["means"].device
    Rt = torch.as_tensor(R, device=dev)
    means = (float(T.scale) * splats["means"].double() @ Rt.T
             + torch.as_tensor(np.asarray(T.translation, dtype=np.float64).reshape(3), device=dev))
    out = {k: v.detach().clone() for k, v in splats.items()}
    out["means"] = means.float()
    out["scales"] = (splats["scales"].double() + np.log(float(T.scale))).float()
    if not np.allclose(R, np.eye(3)):
        qR = torch.as_tensor(rotmat_to_quat(R), device=dev)
        out["quats"] = quat_multiply(qR, splats["quats"].double()).float()
        shN = splats["shN"].double().clone()  # N K-1 3, bands l=1.. stacked
        # colour'(d') = colour(R^T d') = Y(R^T d') @ f = Y(d') @ M(R^T) @ f, so f' = M(R^T) f.
        for l, M in enumerate(sh_rotation_matrices(R.T, sh_degree), start=1):
            sl = slice(l * l - 1, (l + 1) * (l + 1) - 1)
            if shN.shape[1] < sl.stop:
                break
            shN[:, sl] = torch.einsum("ij,njc->nic", M.to(dev), shN[:, sl])
        out["shN"] = shN.float()
    return out


def to_original_frame(model: SplatModel, normalization: Optional[Normalization]) -> dict[str, Tensor]:
    """The model's raw params in the dataset's original coordinates (the inverse of
    `normalization`, which maps original -> normalized)."""
    if normalization is None:
        return {k: v.detach().float().clone() for k, v in model.splats.items()}
    return transform_splats(dict(model.splats), model.sh_degree, normalization.inverse())


# The crop box (in the coordinates of the file being written) is the one box type.
Crop = Box


def select_splats(splats: dict[str, Tensor], crop: Optional[Crop], where: Path | str | None) -> tuple[dict[str, Tensor], int]:
    """Drop rows with NaN/Inf (counted, warned) and rows outside `crop`. Raises PlyError
    when nothing is left (an empty crop box)."""
    n = splats["means"].shape[0]
    finite = torch.ones(n, dtype=torch.bool, device=splats["means"].device)
    for v in splats.values():
        finite &= torch.isfinite(v.reshape(n, -1)).all(dim=-1)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"dropped {dropped} of {n} Gaussians with NaN/Inf values", RuntimeWarning, stacklevel=3)
    keep = finite
    if crop is not None:
        keep = keep & crop.mask(torch.nan_to_num(splats["means"]))
        if not bool(keep.any()):
            raise PlyError(where, f"crop box {list(np.round(crop.lo, 4))}..{list(np.round(crop.hi, 4))} "
                                  f"contains none of the {n} Gaussians")
    if not bool(keep.any()):
        raise PlyError(where, "no finite Gaussians to write")
    return {k: v[keep] for k, v in splats.items()}, dropped


# ---- writing -----------------------------------------------------------------------


def ply_bytes(model: SplatModel, normalization: Optional[Normalization] = None,
              crop: Optional[Crop] = None, where: Path | str | None = None) -> bytes:
    """The INRIA PLY of `model`, mapped to original coordinates and cropped there."""
    splats, _ = select_splats(to_original_frame(model, normalization), crop, where)
    n = splats["means"].shape[0]
    degree = model.sh_degree
    k1 = (degree + 1) ** 2 - 1
    shN = splats["shN"][:, :k1] if k1 else splats["shN"][:, :0]
    if shN.shape[1] != k1:
        raise ValueError(f"model has {shN.shape[1]} higher SH bases, degree {degree} needs {k1}")
    cols = [
        splats["means"], torch.zeros(n, 3, device=splats["means"].device),
        splats["sh0"].reshape(n, 3),
        shN.permute(0, 2, 1).reshape(n, 3 * k1),  # channel-major, as INRIA writes
        splats["opacities"].reshape(n, 1), splats["scales"], splats["quats"],
    ]
    data = torch.cat([c.float() for c in cols], dim=1).cpu().numpy().astype("<f4")
    return ply_header(degree, n) + data.tobytes()


def write_ply(model: SplatModel, path: Path | str, normalization: Optional[Normalization] = None,
              crop: Optional[Crop] = None) -> int:
    """Write `model` (normalized frame) as an INRIA 3DGS PLY in original coordinates
    (the inverse of `normalization`), optionally cropped to `crop` (original coordinates).
    NaN/Inf rows are dropped with a warning. Returns the number of Gaussians written."""
    data = ply_bytes(model, normalization, crop, where=path)
    atomic_write_bytes(Path(path), data)
    header_end = data.index(b"end_header\n")
    return int(re.search(rb"element vertex (\d+)", data[:header_end]).group(1))


# ---- reading -----------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _parse_header(path: Path, raw: bytes) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    if not raw.startswith(b"ply"):
        raise PlyError(path, "not a PLY file (no 'ply' magic)")
    end = raw.find(b"end_header")
    if end < 0:
        raise PlyError(path, "corrupt PLY header (no end_header)")
    body_start = raw.index(b"\n", end) + 1 if b"\n" in raw[end:] else len(raw)
    try:
        lines = raw[:end].decode("ascii").replace("\r", "").split("\n")
    except UnicodeDecodeError:
        raise PlyError(path, "corrupt PLY header (not ASCII)") from None
    fmt, elements = None, []
    for line in lines[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element" and len(tok) == 3:
            try:
                elements.append((tok[1], int(tok[2]), []))
            except ValueError:
                raise PlyError(path, f"corrupt PLY header line {line!r}") from None
        elif tok[0] == "property" and elements:
            if tok[1] == "list":
                elements[-1][2].append((tok[-1], "list"))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise PlyError(path, f"corrupt PLY header line {line!r}")
        else:
            raise PlyError(path, f"corrupt PLY header line {line!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise PlyError(path, f"unsupported PLY format {fmt!r}")
    return fmt, elements, body_start


def _read_vertex_table(path: Path) -> dict[str, np.ndarray]:
    raw = Path(path).read_bytes()
    fmt, elements, pos = _parse_header(path, raw)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise PlyError(path, "PLY has no vertex element")
    for name, count, props in elements:
        if name == "vertex":
            break
        # Elements before the vertices must be skippable (fixed-size binary rows).
        if fmt == "ascii" or any(t == "list" for _, t in props):
            raise PlyError(path, f"unsupported PLY layout (element {name!r} before vertices)")
        pos += count * sum(np.dtype(t).itemsize for _, t in props)
    _, count, props = elements[names.index("vertex")]
    if any(t == "list" for _, t in props):
        raise PlyError(path, "unsupported PLY layout (list property in vertices)")
    if fmt == "ascii":
        text = raw[pos:].decode("ascii", errors="replace").split("\n")
        try:
            rows = np.array([line.split()[: len(props)] for line in text[:count]], dtype=np.float64)
        except ValueError:
            raise PlyError(path, "corrupt ASCII PLY body") from None
        if rows.shape != (count, len(props)):
            raise PlyError(path, f"file is truncated (expected {count} vertices)")
        return {n: rows[:, i] for i, (n, _) in enumerate(props)}
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(n, order + t) for n, t in props])
    need = count * dtype.itemsize
    if len(raw) - pos < need:
        raise PlyError(path, f"file is truncated ({len(raw) - pos} of {need} bytes of vertex data)")
    table = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
    return {n: table[n].astype(np.float32) for n, _ in props}


def read_ply(path: Path | str) -> SplatModel:
    """Any 3DGS PLY (INRIA, gsplat, nerfstudio, splatlab; SH degree 0..3 from the
    f_rest count) -> SplatModel with raw params, in the file's own coordinates."""
    path = Path(path)
    try:
        v = _read_vertex_table(path)
    except FileNotFoundError:
        raise PlyError(path, "file not found") from None
    except IsADirectoryError:
        raise PlyError(path, "is a folder, not a PLY file") from None
    needed = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [p for p in needed if p not in v]
    if missing:
        raise PlyError(path, f"not a 3D Gaussian splatting PLY (no {', '.join(missing[:4])}"
                             f"{'...' if len(missing) > 4 else ''} properties)")
    n_rest = 0
    while f"f_rest_{n_rest}" in v:
        n_rest += 1
    degree = {c: d for d, c in F_REST_COUNT.items()}.get(n_rest)
    if degree is None:
        raise PlyError(path, f"{n_rest} f_rest properties match no SH degree 0..3 (need 0, 9, 24 or 45)")
    n = len(v["x"])
    if n == 0:
        raise PlyError(path, "PLY has no Gaussians (0 vertices)")
    col = lambda *ks: torch.from_numpy(np.stack([v[k] for k in ks], axis=1).astype(np.float32))  # noqa: E731
    k1 = n_rest // 3
    rest = col(*[f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(n, 0)
    shN = rest.reshape(n, 3, k1).permute(0, 2, 1).contiguous()  # channel-major -> N K-1 3
    splats = {
        "means": col("x", "y", "z"),
        "scales": col("scale_0", "scale_1", "scale_2"),
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
        "opacities": col("opacity").reshape(n),
        "sh0": col("f_dc_0", "f_dc_1", "f_dc_2").reshape(n, 1, 3),
        "shN": shN,
    }
    return SplatModel(splats, degree)


__all__ = ["write_ply", "read_ply", "ply_bytes", "ply_header", "ply_property_names", "PlyError",
           "Crop", "to_original_frame", "transform_splats", "sh_rotation_matrices", "F_REST_COUNT"]
