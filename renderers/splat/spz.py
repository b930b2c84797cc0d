"""Niantic's SPZ (`.spz`): compressed 3D Gaussians, the format the web viewers load.

One gzip stream: a 16-byte header (magic "NGSP", version, N, SH degree, fractional bits,
flags, reserved), then attribute arrays, each for all N points:
    positions  3 x 24-bit signed fixed point (value * 2^fractional_bits), little-endian
    alphas     sigmoid(opacity) * 255
    colors     sh0 * 0.15 * 255 + 127.5                  (3 bytes)
    scales     (log scale + 10) * 16                      (3 bytes)
    rotations  v2: x y z of the w >= 0 unit quaternion, *127.5 + 127.5 (3 bytes);
               v3: "smallest three" (2-bit index of the largest, 3 x (sign + 9 bits))
    sh         K-1 coefficients x RGB, each * 128 + 128 (the INRIA basis, coefficient-major)

Axes: SPZ stores RUB (x right, y up, z back: OpenGL/three.js); a 3DGS PLY is RDF (the
COLMAP/OpenCV frame the dataset came in). This module is the codec in the file's own axes;
`io.spz_bytes` / `io.read_spz` turn the splats by `RDF_TO_RUB` (180 degrees about x: y and
z negated, rotations and SH turned alike) on the way out and back, so an SPZ written here
opens upright in SPZ viewers and reads back in the dataset's original frame, as our PLY.

Written: version 3, 8-bit SH (Niantic's writer keeps 4-5 bits; readers decode both alike),
fractional bits 12 unless the scene is too large for 24-bit positions at that precision.
Read: versions 2 and 3. Memory is bounded: the header's point count is checked against
the compressed size before anything is inflated, and inflation stops at the expected size.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splatlab.scenes.types import Normalization, SceneError

MAGIC = 0x5053474E  # "NGSP" little-endian
HEADER = struct.Struct("<IIIBBBB")
COLOR_SCALE = 0.15
SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15}
# Quantized splats compress about 2-3x; a payload claiming far more than this ratio over
# the file's size is corrupt (or a gzip bomb) and is refused before it is inflated.
MAX_RATIO = 64
# SPZ's RUB axes from the PLY's RDF: a proper rotation (180 degrees about x), its own inverse.
RDF_TO_RUB = Normalization(scale=1.0, translation=np.zeros(3), rotation=np.diag([1.0, -1.0, -1.0]))


class SpzError(SceneError):
    """An SPZ file that cannot be read (one line naming the file)."""


def _point_bytes(version: int, sh_degree: int) -> int:
    return 9 + 1 + 3 + 3 + (3 if version == 2 else 4) + 3 * SH_DIM[sh_degree]


# ---- writing -------------------------------------------------------------------------


def _smallest_three(q: np.ndarray) -> np.ndarray:
    """N 4 wxyz quaternions -> N 4 bytes, SPZ v3's packing of xyzw."""
    q = q[:, [1, 2, 3, 0]].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-30)
    big = np.abs(q).argmax(1)
    q *= np.where(q[np.arange(len(q)), big] < 0, -1.0, 1.0)[:, None]  # the largest is positive
    packed = np.zeros(len(q), dtype=np.uint32)
    for axis in range(4):
        keep = big != axis
        mag = np.clip(np.round(511 * np.abs(q[:, axis]) * np.sqrt(2)), 0, 511).astype(np.uint32)
        word = (packed << 10) | ((q[:, axis] < 0).astype(np.uint32) << 9) | mag
        packed = np.where(keep, word, packed)
    packed |= big.astype(np.uint32) << 30
    return packed.astype("<u4").view(np.uint8).reshape(-1, 4)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def encode(s: dict[str, Tensor], sh_degree: int) -> bytes:
    """SPZ v3 of raw splat params, already in SPZ's axes; shN is N K-1 3 (may hold more
    bands than `sh_degree`: the first ones are written)."""
    means = s["means"].double().numpy()
    n = len(means)
    extent = float(np.abs(means).max()) if n else 0.0
    frac = 12
    while frac > 0 and extent * (1 << frac) >= (1 << 23) - 1:
        frac -= 1
    if extent * (1 << frac) >= (1 << 23) - 1:
        raise ValueError(f"positions up to {extent:.3g} do not fit SPZ's 24-bit fixed point")
    fixed = np.round(means * (1 << frac)).astype(np.int64) & 0xFFFFFF
    pos = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, fixed >> 16], axis=-1).astype(np.uint8)
    alpha = _u8(torch.sigmoid(s["opacities"].double()).numpy() * 255.0)
    color = _u8(s["sh0"].double().reshape(n, 3).numpy() * (COLOR_SCALE * 255.0) + 127.5)
    scale = _u8((s["scales"].double().numpy() + 10.0) * 16.0)
    rot = _smallest_three(s["quats"].double().numpy())
    k1 = SH_DIM[sh_degree]
    sh = _u8(s["shN"][:, :k1].double().numpy().reshape(n, 3 * k1) * 128.0 + 128.0)
    header = HEADER.pack(MAGIC, 3, n, sh_degree, frac, 0, 0)
    body = b"".join(a.tobytes() for a in (pos, alpha, color, scale, rot, sh))
    return gzip.compress(header + body, compresslevel=6, mtime=0)


# ---- reading -------------------------------------------------------------------------


def _inflate(path: Path, raw: bytes) -> tuple[tuple, bytes]:
    """The header fields and exactly the expected payload, inflating no more than that."""
    if raw[:2] != b"\x1f\x8b":
        if raw[:4] == struct.pack("<I", MAGIC):
            raise SpzError(path, "SPZ version 4 (zstd container) is not supported; re-save it as version 3")
        raise SpzError(path, "not an SPZ file (no gzip stream)")
    d = zlib.decompressobj(wbits=31)
    try:
        head = d.decompress(raw, HEADER.size)
        if len(head) < HEADER.size:
            raise SpzError(path, "file is truncated (no complete SPZ header)")
        magic, version, n, degree, frac, _flags, _ = HEADER.unpack(head)
        if magic != MAGIC:
            raise SpzError(path, "not an SPZ file (wrong magic)")
        if version not in (2, 3):
            raise SpzError(path, f"SPZ version {version} is not supported (2 and 3 are)")
        if degree not in SH_DIM:
            raise SpzError(path, f"SH degree {degree} is not 0..3")
        if not 0 <= frac <= 24:
            raise SpzError(path, f"{frac} fractional bits is not 0..24")
        if n == 0:
            raise SpzError(path, "SPZ has no Gaussians (0 points)")
        need = n * _point_bytes(version, degree)
        if need > MAX_RATIO * len(raw) + (1 << 20):
            raise SpzError(path, f"header claims {n:,} Gaussians ({need:,} bytes) but the file has "
                                 f"only {len(raw):,} compressed bytes")
        body = d.decompress(d.unconsumed_tail, need)
    except zlib.error as e:
        raise SpzError(path, f"corrupt gzip stream ({e})") from None
    if len(body) < need:
        raise SpzError(path, f"file is truncated ({len(body)} of {need} bytes of Gaussians)")
    return (version, n, degree, frac), body


def _unpack_smallest_three(b: np.ndarray) -> np.ndarray:
    """N 4 bytes -> N 4 wxyz quaternions."""
    word = b.astype(np.uint32)
    packed = word[:, 0] | (word[:, 1] << 8) | (word[:, 2] << 16) | (word[:, 3] << 24)
    big = (packed >> 30).astype(np.int64)
    q = np.zeros((len(b), 4), dtype=np.float64)
    for axis in (3, 2, 1, 0):  # written first-to-last, so read back last-to-first
        keep = big != axis
        val = (packed & 511) / 511.0 / np.sqrt(2)
        val = np.where(packed & 512, -val, val)
        q[:, axis] = np.where(keep, val, q[:, axis])
        packed = np.where(keep, packed >> 10, packed)
    rest = np.clip(1.0 - (q * q).sum(1), 0.0, None)
    q[np.arange(len(q)), big] = np.sqrt(rest)
    return q[:, [3, 0, 1, 2]]


def decode(path: Path | str) -> tuple[dict[str, Tensor], int]:
    """An SPZ file -> (raw splat params in SPZ's own axes, SH degree). Raises SpzError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpzError(path, "file not found") from None
    except IsADirectoryError:
        raise SpzError(path, "is a folder, not an SPZ file") from None
    except OSError as e:
        raise SpzError(path, f"cannot read ({e.strerror or e})") from None
    (version, n, degree, frac), body = _inflate(path, raw)
    buf = np.frombuffer(body, dtype=np.uint8)
    o = 0

    def take(width: int) -> np.ndarray:
        nonlocal o
        out = buf[o:o + n * width].reshape(n, width)
        o += n * width
        return out

    p = take(9).reshape(n, 3, 3).astype(np.int32)
    fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)  # sign-extend 24 bits
    means = fixed / float(1 << frac)
    # 0 and 255 would be -inf/+inf logits: keep half a step inside.
    a = np.clip(take(1)[:, 0] / 255.0, 0.5 / 255, 1 - 0.5 / 255)
    opac = np.log(a / (1 - a))
    sh0 = (take(3) / 255.0 - 0.5) / COLOR_SCALE
    scales = take(3) / 16.0 - 10.0
    if version == 2:
        xyz = take(3) / 127.5 - 1.0
        w = np.sqrt(np.clip(1.0 - (xyz * xyz).sum(1), 0.0, None))
        quats = np.concatenate([w[:, None], xyz], axis=1)
    else:
        quats = _unpack_smallest_three(take(4))
    k1 = SH_DIM[degree]
    shN = (take(3 * k1).reshape(n, k1, 3) - 128.0) / 128.0
    f32 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)  # noqa: E731
    splats = {"means": f32(means), "scales": f32(scales), "quats": f32(quats),
              "opacities": f32(opac), "sh0": f32(sh0).reshape(n, 1, 3), "shN": f32(shN)}
    return splats, degree


__all__ = ["SpzError", "encode", "decode", "RDF_TO_RUB"]
