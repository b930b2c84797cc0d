"""Multiresolution hash encoding (Instant-NGP): points in [0, 1]^3 -> L levels x F features.

Level l has resolution `res[l]` cells per axis (`res[l] + 1` grid vertices); a point's
feature is the trilinear blend of the 8 surrounding vertices' table entries. A level whose
(res + 1)^3 vertices fit in the table is indexed densely (x + y (r+1) + z (r+1)^2, no
collisions); finer levels use Instant-NGP's spatial hash (x * 1 ^ y * 2654435761 ^
z * 805459861) mod T. T is a power of two, so only the products' low bits matter: both
backends compute them with wrapping 32-bit integers, as tiny-cuda-nn, and index the same
entries as exact arithmetic would (the float64 brute force in the tests checks that).

Two backends with one signature: `torch` (pure torch, the CPU path and the test oracle)
and `triton` (forward and backward kernels; backward scatters into the table gradient with
atomic adds). `backend="auto"` picks triton for CUDA tensors when it is installed.
The triton path gives no gradient for the points (a NeRF never moves its sample points);
the torch path does, through the interpolation weights.

The triton kernels come in variants (`VARIANTS`, launch configurations of the same two
kernels: points per program, levels per program, 64-bit entry access, vector atomics,
replicated coarse-level gradients, eviction hints). `DEFAULT_VARIANT` is the one used;
`SPLATLAB_HASHGRID_VARIANT=NAME` (or `FWD/BWD`) overrides it, and
benchmarks/hashgrid_bench.py times and checks them all in one run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

HashBackend = Literal["auto", "torch", "triton"]
PRIMES = (1, 2654435761, 805459861)


def level_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Geometric series of per-level resolutions from `base_resolution` to `max_resolution`."""
    if levels < 1 or base_resolution < 1 or max_resolution < base_resolution:
        raise ValueError(f"bad hash grid: levels={levels} base={base_resolution} max={max_resolution}")
    if levels == 1:
        return [int(base_resolution)]
    growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))
    return [int(math.floor(base_resolution * growth**l + 1e-6)) for l in range(levels)]


def dense_levels(resolutions: list[int], table_size: int) -> list[bool]:
    """Which levels fit densely in a table of `table_size` entries."""
    return [(r + 1) ** 3 <= table_size for r in resolutions]


_LEVEL_TENSORS: dict = {}


def _level_tensor(values: list[int], dtype, device) -> Tensor:
    """Per-level constants on `device`, made once: a fresh host->GPU copy every step would
    synchronise the training loop."""
    key = (tuple(values), dtype, str(device))
    t = _LEVEL_TENSORS.get(key)
    if t is None:
        t = _LEVEL_TENSORS[key] = torch.tensor(values, dtype=dtype, device=device)
    return t


def _wrap32(v: int) -> int:
    """`v` as a wrapped int32 (two's complement)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _axis_pairs(p0: Int[Tensor, "N L"], mult) -> Tensor:
    """N L 2: the vertex coordinate below and above, times `mult` (per level)."""
    return torch.stack([p0 * mult, (p0 + 1) * mult], -1)


def hash_encode_torch(
    x: Float[Tensor, "N 3"], table: Float[Tensor, "L T F"], resolutions: list[int]
) -> Float[Tensor, "N LF"]:
    """Pure-torch hash encoding (differentiable in `table` and `x`). Points outside
    [0, 1] are clamped onto the grid.

    The 8 corners come from per-axis pairs by broadcasting (corner c = bx + 2 by + 4 bz):
    dense index x + y s + z s^2 is a broadcast sum, the hash a broadcast XOR, and the
    table is read with one gather for all corners and levels."""
    L, T, F = table.shape
    N, dev = x.shape[0], x.device
    res = _level_tensor(resolutions, torch.int64, dev)  # L
    pos = x.clamp(0.0, 1.0)[:, None, :] * res[None, :, None].to(x.dtype)  # N L 3
    p0 = torch.minimum(pos.detach().floor().long(), (res - 1).clamp_min(0)[None, :, None])
    frac = pos - p0.to(x.dtype)
    wx, wy, wz = (torch.stack([1.0 - frac[..., k], frac[..., k]], -1) for k in range(3))  # N L 2
    w = (wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]).reshape(N, L, 8)
    nd = sum(dense_levels(resolutions, T))  # dense levels are the coarse prefix
    parts = []
    if nd > 0:
        side = res[:nd] + 1
        ax = _axis_pairs(p0[:, :nd, 0], torch.ones_like(side))
        ay = _axis_pairs(p0[:, :nd, 1], side)
        az = _axis_pairs(p0[:, :nd, 2], side * side)
        parts.append((az[..., :, None, None] + ay[..., None, :, None] + ax[..., None, None, :]).reshape(N, nd, 8))
    if nd < L:
        # int32 with wrap-around: the low bits (all that `& (T - 1)` keeps) are those of the
        # 64-bit product, and int32 halves the memory traffic of this, the hot part.
        q = p0[:, nd:].int()
        hx, hy, hz = (_axis_pairs(q[..., k], _wrap32(PRIMES[k])) for k in range(3))
        h = (hz[..., :, None, None] ^ hy[..., None, :, None] ^ hx[..., None, None, :]) & (T - 1)
        parts.append(h.reshape(N, L - nd, 8).long())
    idx = torch.cat(parts, 1) + (torch.arange(L, device=dev) * T)[None, :, None]  # N L 8
    vals = table.reshape(L * T, F)[idx.reshape(-1)].reshape(N, L, 8, F)
    return (w[..., None].to(table.dtype) * vals).sum(2).reshape(N, L * F)


# ---- triton ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HashKernelConfig:
    """One launch configuration of the triton kernels (see _hashgrid_triton.py)."""

    block: int = 128  # points per program
    num_warps: int = 4
    levels_per_program: int = 1  # LPP; the largest divisor of L not above it is used
    pack: bool = True  # F == 2: one 64-bit access per entry / output pair / gradient pair
    v2_atomics: bool = True  # with pack, on sm_90+: red.global.add.v2.f32 (else two fp32 atomics)
    pair_x: bool = False  # with pack: x-neighbour corners sharing an aligned entry pair, one 16-byte access
    replicas: int = 0  # > 1: coarse levels' gradients go to this many copies, summed after
    replica_entries: int = 1 << 15  # levels with at most this many entries are replicated
    evict: bool = False  # table gathers evict_last, streamed points/outputs/gradients evict_first


# Every variant the benchmark times (benchmarks/hashgrid_bench.py). "baseline" is the first
# kernel (a [BLOCK, F] tile over two lanes a point, scalar atomics, one level a program).
VARIANTS: dict[str, HashKernelConfig] = {
    "baseline": HashKernelConfig(pack=False, v2_atomics=False),
    "pack": HashKernelConfig(v2_atomics=False),
    "pack-lpp4": HashKernelConfig(v2_atomics=False, levels_per_program=4),
    "v2": HashKernelConfig(),
    "v2-lpp2": HashKernelConfig(levels_per_program=2),
    "v2-lpp4": HashKernelConfig(levels_per_program=4),
    "v2-lpp16": HashKernelConfig(levels_per_program=16),
    "v2-lpp4-b256": HashKernelConfig(levels_per_program=4, block=256),
    "v2-lpp4-b256-w8": HashKernelConfig(levels_per_program=4, block=256, num_warps=8),
    "v2-lpp4-b512-w8": HashKernelConfig(levels_per_program=4, block=512, num_warps=8),
    "v2-lpp4-evict": HashKernelConfig(levels_per_program=4, evict=True),
    "v2-lpp4-rep16": HashKernelConfig(levels_per_program=4, replicas=16),
    "v2-xpair": HashKernelConfig(pair_x=True),
    "v2-lpp4-xpair": HashKernelConfig(levels_per_program=4, pair_x=True),
    "v2-lpp4-xpair-rep16": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16),
    # Around the default: points per thread and per program, levels per program, copies.
    "v2-lpp4-xpair-rep16-b256": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16, block=256),
    "v2-lpp4-xpair-rep16-b512": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16, block=512),
    "v2-lpp4-xpair-rep16-b256-w8": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16, block=256,
                                                    num_warps=8),
    "v2-lpp4-xpair-rep16-b64-w2": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16, block=64,
                                                   num_warps=2),
    "v2-lpp2-xpair-rep16": HashKernelConfig(levels_per_program=2, pair_x=True, replicas=16),
    "v2-lpp8-xpair-rep16": HashKernelConfig(levels_per_program=8, pair_x=True, replicas=16),
    "v2-lpp4-xpair-rep8": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=8),
    "v2-lpp4-xpair-rep32": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=32),
    "v2-lpp4-xpair-rep16-e17": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16,
                                                replica_entries=1 << 17),
    "v2-lpp4-xpair-rep16-evict": HashKernelConfig(levels_per_program=4, pair_x=True, replicas=16, evict=True),
}
# The kernel `hash_encode` uses: a VARIANTS name, or "FWD/BWD" (one variant's forward, another's
# backward). The environment variable SPLATLAB_HASHGRID_VARIANT overrides it (for timing runs).
DEFAULT_VARIANT = "v2-lpp4-xpair-rep16"  # fastest on an H200 at 4c0f69c (RESULTS.md, Hash encoding)
VARIANT_ENV = "SPLATLAB_HASHGRID_VARIANT"


def resolve_variant(variant: Optional[str] = None) -> tuple[HashKernelConfig, HashKernelConfig]:
    """(forward config, backward config) of a variant name, "FWD/BWD", or the default."""
    name = variant or os.environ.get(VARIANT_ENV) or DEFAULT_VARIANT
    parts = name.split("/")
    if len(parts) > 2 or any(p not in VARIANTS for p in parts):
        raise ValueError(f"unknown hash-grid kernel variant {name!r}: use one of {', '.join(VARIANTS)} "
                         "or FWD/BWD")
    return VARIANTS[parts[0]], VARIANTS[parts[-1]]


_KERNELS = None


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _build_kernels():
    """The triton kernels, imported on first use (triton is optional: the torch path needs none)."""
    global _KERNELS
    if _KERNELS is None:
        from . import _hashgrid_triton as k

        _KERNELS = (k._fwd, k._bwd)
    return _KERNELS


def _levels_per_program(cfg: HashKernelConfig, L: int) -> int:
    return max(d for d in range(1, min(cfg.levels_per_program, L) + 1) if L % d == 0)


def _vector_atomics(cfg: HashKernelConfig, x: Tensor) -> bool:
    # Inline PTX: compiled kernels only (the interpreter runs CPU tensors), Hopper or newer.
    return cfg.pack and cfg.v2_atomics and x.is_cuda and torch.cuda.get_device_capability(x.device) >= (9, 0)


def _replicated(cfg: HashKernelConfig, resolutions: list[int], T: int) -> tuple[int, int]:
    """(how many coarse levels get gradient copies, entries a copy holds); (0, 0) for none."""
    if cfg.replicas <= 1:
        return 0, 0
    sizes = [(r + 1) ** 3 for r in resolutions]
    n = 0
    while n < len(sizes) and sizes[n] <= min(T, cfg.replica_entries):
        n += 1
    if not n:
        return 0, 0
    s = max(sizes[:n])
    return n, s + (s & 1)  # even: each copy starts 16-byte aligned (the paired reduction needs it)


def _aligned16(t: Tensor) -> Tensor:
    # The kernels read entries and gradient pairs 8 or 16 bytes at a time; a view that starts
    # off that alignment (never a fresh allocation) is copied.
    return t if t.data_ptr() % 16 == 0 else t.clone()


class _HashEncodeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, res: Tensor, dense: Tensor, resolutions: tuple,
                variant: Optional[str]) -> Tensor:
        fwd, _ = _build_kernels()
        cfg, ctx.bwd_cfg = resolve_variant(variant)
        L, T, F = table.shape
        N = x.shape[0]
        out = torch.empty(N, L * F, dtype=torch.float32, device=x.device)
        table = _aligned16(table)
        if N > 0:
            lpp = _levels_per_program(cfg, L)
            ev = "evict_first" if cfg.evict else ""
            fwd[(triton_cdiv(N, cfg.block), L // lpp)](
                x, table, res, dense, out, N, T=T, L=L, F=F, BLOCK=cfg.block, LPP=lpp, PACK=cfg.pack and F == 2,
                XPAIR=cfg.pack and cfg.pair_x and F == 2, ASM=x.is_cuda, TAB_EV="evict_last" if cfg.evict else "", STREAM_EV=ev, num_warps=cfg.num_warps)
        ctx.save_for_backward(x, res, dense)
        ctx.table_shape = (L, T, F)
        ctx.resolutions = resolutions
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        _, bwd = _build_kernels()
        x, res, dense = ctx.saved_tensors
        cfg = ctx.bwd_cfg
        L, T, F = ctx.table_shape
        N = x.shape[0]
        nrep, S = _replicated(cfg, list(ctx.resolutions), T)
        reps = cfg.replicas if nrep else 1
        flat = torch.zeros(L * T * F + (reps * nrep * S * F if nrep else 0), dtype=torch.float32, device=x.device)
        grad_table = flat[: L * T * F].view(L, T, F)
        if N > 0 and ctx.needs_input_grad[1]:
            lpp = _levels_per_program(cfg, L)
            bwd[(triton_cdiv(N, cfg.block), L // lpp)](
                x, _aligned16(grad_out.float().contiguous()), res, dense, flat, N, nrep, T=T, L=L, F=F, BLOCK=cfg.block,
                LPP=lpp, PACK=cfg.pack and F == 2, V2=_vector_atomics(cfg, x),
                XPAIR=cfg.pack and cfg.pair_x and F == 2, REPS=reps, S=max(S, 1),
                STREAM_EV="evict_first" if cfg.evict else "", num_warps=cfg.num_warps)
            if nrep:
                copies = flat[L * T * F :].view(reps, nrep, S, F)
                grad_table[:nrep, :S] += copies.sum(0)
        return None, grad_table, None, None, None, None


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def hash_encode_triton(
    x: Float[Tensor, "N 3"], table: Float[Tensor, "L T F"], resolutions: list[int], variant: Optional[str] = None
) -> Float[Tensor, "N LF"]:
    """Triton hash encoding (float32; differentiable in `table` only). `variant`: a VARIANTS
    name or "FWD/BWD"; None = $SPLATLAB_HASHGRID_VARIANT, else DEFAULT_VARIANT."""
    L, T, F = table.shape
    if T & (T - 1) or F & (F - 1):
        raise ValueError(f"triton hash encoding needs power-of-two table size and features, got {T}, {F}")
    if T * F >= 2**31:
        raise ValueError(f"triton hash encoding indexes a level with int32: table size x features must be < 2^31, "
                         f"got {T} x {F}")
    res = _level_tensor(resolutions, torch.int32, x.device)
    dense = _level_tensor([int(d) for d in dense_levels(resolutions, T)], torch.int32, x.device)
    return _HashEncodeTriton.apply(x.float().contiguous(), table.float().contiguous(), res, dense,
                                   tuple(resolutions), variant)


def hash_encode(
    x: Float[Tensor, "N 3"],
    table: Float[Tensor, "L T F"],
    resolutions: list[int],
    backend: HashBackend = "auto",
) -> Float[Tensor, "N LF"]:
    """Hash-encode points in [0, 1]^3 (float32 out). `backend="auto"`: triton on CUDA when
    installed, else torch."""
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton_available() else "torch"
    if backend == "triton":
        return hash_encode_triton(x, table, resolutions)
    return hash_encode_torch(x.float(), table.float(), resolutions)


def init_table(levels: int, log2_table_size: int, features: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Instant-NGP's initialisation: uniform in [-1e-4, 1e-4]."""
    t = torch.rand(levels, 2**log2_table_size, features, generator=generator)
    return (t * 2 - 1) * 1e-4


__all__ = ["DEFAULT_VARIANT", "HashBackend", "HashKernelConfig", "PRIMES", "VARIANTS", "dense_levels", "hash_encode", "hash_encode_torch",
           "hash_encode_triton", "init_table", "level_resolutions", "resolve_variant", "triton_available"]
