"""Pure-PyTorch Gaussian rasterizer: the CPU backend and the test oracle for gsplat.

It follows gsplat 1.5.3's math rule for rule (CONVENTIONS.md): EWA projection with the
clamped pinhole Jacobian, eps2d blur (+ optional antialiasing compensation), opacity-aware
per-axis radii, gsplat's tile intersection rule (8x8 tiles by default here; the
tile size changes speed, not results), depth-sorted front-to-back compositing with
gsplat's alpha and transmittance thresholds. Rendering is tiled: every tile gets its
depth-sorted candidate list, tiles are batched by candidate count (little padding), and
each batch is bounded to `max_pairs` pixel-Gaussian pairs so peak memory stays bounded.
The compositing core is a custom autograd Function whose backward recomputes the per-pair
terms (as gsplat's kernel does), so no per-pair tensor outlives its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .types import RenderMode, RenderOutput
from .sh import sh_to_color

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
T_THRESHOLD = 1e-4  # a pixel is done when its transmittance would drop to <= this
EPS2D = 0.3
MAX_EXTEND = 3.33  # gsplat's cap on the bounding box, in standard deviations
# tile_touches keeps a pair up to this much sigma past the threshold (1% of alpha): every pair
# whose alpha the compositor's own rounding could put over 1/255.
TILE_TEST_MARGIN = 0.01
TILE_SIZE = 8  # results do not depend on it; 8 wastes fewer pixel-Gaussian pairs on CPU than 16
MAX_PAIRS = 1 << 21  # pixel-Gaussian pairs evaluated per batch of tiles
# Per render, the compositing forward keeps its per-pair tensors for the backward while they
# fit this many bytes (about 4 floats and a flag a pair: ~100 MB for the CPU demo's step);
# past it, batches recompute them in the backward (about a quarter of a CPU step's time).
SAVE_BYTES = 1 << 30


# ---------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------
def quat_to_rotmat(quats: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices from wxyz quaternions (normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(
    quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3 3"]:
    """World-space covariance R S S^T R^T."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


@dataclass
class Projection:
    """Per camera and Gaussian (C N). Entries with radii == 0 are culled (zeros)."""

    means2d: Float[Tensor, "C N 2"]
    depths: Float[Tensor, "C N"]
    conics: Float[Tensor, "C N 3"]  # inverse 2D covariance (a, b, c) of [[a b] [b c]]
    radii: Int[Tensor, "C N 2"]
    compensations: Optional[Float[Tensor, "C N"]]
    valid: Bool[Tensor, "C N"]


def project(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = EPS2D,
    antialiased: bool = False,
) -> Projection:
    """gsplat's fully_fused_projection (pinhole, non-packed) in torch."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mean_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # C N 3
    cov_w = covariance_3d(quats, scales)
    cov_c = torch.einsum("cij,njk,clk->cnil", R, cov_w, R)  # R cov R^T, C N 3 3

    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    # Culled entries still flow through the graph; a safe z keeps their (zeroed) grads finite.
    z = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # gsplat clamps x/z, y/z to the FOV widened by 0.3 tan(fov/2) on each side before
    # building the Jacobian (the mean itself is projected unclamped).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    ja, jb = fx * rz, -fx * tx * rz * rz  # J = [[ja 0 jb] [0 jc jd]]
    jc, jd = fy * rz, -fy * ty * rz * rz
    s00, s01, s02 = cov_c[..., 0, 0], cov_c[..., 0, 1], cov_c[..., 0, 2]
    s11, s12, s22 = cov_c[..., 1, 1], cov_c[..., 1, 2], cov_c[..., 2, 2]
    c00 = ja * ja * s00 + 2 * ja * jb * s02 + jb * jb * s22
    c01 = ja * jc * s01 + ja * jd * s02 + jb * jc * s12 + jb * jd * s22
    c11 = jc * jc * s11 + 2 * jc * jd * s12 + jd * jd * s22
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    det_orig = c00 * c11 - c01 * c01
    c00, c11 = c00 + eps2d, c11 + eps2d
    det = c00 * c11 - c01 * c01
    ok = in_depth & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    compensation = torch.sqrt(torch.clamp_min(det_orig / det_safe, 0.0)) if antialiased else None
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)

    with torch.no_grad():
        # Opacity-aware box (arXiv 2402.00525 B.2): beyond `extend` sigmas alpha < 1/255.
        op = opacities.detach()[None, :].expand_as(z)
        if compensation is not None:
            op = op * compensation.detach()
        ok = ok & (op >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=MAX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(c00.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c11.detach().clamp_min(0)))
        ok = ok & ((rx > 0) | (ry > 0))
        m = mean2d.detach()
        ok = ok & (m[..., 0] + rx > 0) & (m[..., 0] - rx < width)
        ok = ok & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height)
        radii = torch.where(ok[..., None], torch.stack([rx, ry], -1), 0).to(torch.int32)

    zero = torch.zeros((), dtype=means.dtype, device=means.device)
    return Projection(
        means2d=torch.where(ok[..., None], mean2d, zero),
        depths=torch.where(ok, mean_c[..., 2], zero),
        conics=torch.where(ok[..., None], conics, zero),
        radii=radii,
        compensations=None if compensation is None else torch.where(ok, compensation, zero),
        valid=ok,
    )


# ---------------------------------------------------------------------------------------
# Tile intersection
# ---------------------------------------------------------------------------------------
@dataclass
class TileLists:
    """Depth-sorted candidates per tile, as gsplat's isect_tiles/isect_offset_encode."""

    flat_ids: Int[Tensor, " M"]  # index into the C*N flattened Gaussians, sorted (tile, depth)
    offsets: Int[Tensor, " T"]  # start of each tile's run in flat_ids; T = C*th*tw
    counts: Int[Tensor, " T"]
    tiles_per_gauss: Int[Tensor, "C N"]
    tile_width: int
    tile_height: int


def _stable_argsort(keys: Tensor, n_keys: int) -> Tensor:
    """Stable argsort of small non-negative integer keys. On CPU numpy's radix/timsort is
    25x faster than torch.sort for this, and this sort is a fixed cost of every render."""
    if keys.is_cuda:
        return torch.sort(keys, stable=True).indices
    dt = np.int16 if n_keys < 2**15 else np.int64
    return torch.from_numpy(np.argsort(keys.numpy().astype(dt), kind="stable"))


@torch.no_grad()
def tile_touches(
    means2d: Float[Tensor, "M 2"],
    conics: Float[Tensor, "M 3"],
    opacities: Float[Tensor, " M"],
    tile_x: Int[Tensor, " M"],
    tile_y: Int[Tensor, " M"],
    tile_size: int,
) -> Bool[Tensor, " M"]:
    """Per candidate pair (a Gaussian, a tile of its bounding box): whether its alpha reaches
    1/255 at any pixel centre of the tile. The box bounds that ellipse by its axis-aligned
    extent, so a thin, tilted Gaussian's box holds tiles the ellipse misses; every pixel there
    skips the Gaussian (alpha < 1/255), so dropping those pairs changes no pixel and no
    gradient, only the work (Speedy-Splat's exact tile test, arXiv 2412.00578)."""
    m = means2d
    a, b, c = conics.unbind(-1)
    # sigma(d) = a dx^2 / 2 + b dx dy + c dy^2 / 2 is convex (conics are positive definite):
    # its minimum over the rectangle of pixel-centre offsets d = p - mean is 0 when the mean is
    # inside, else on an edge, where it is a 1D quadratic minimised by clamping.
    x0 = tile_x.to(m.dtype) * tile_size + 0.5 - m[:, 0]
    y0 = tile_y.to(m.dtype) * tile_size + 0.5 - m[:, 1]
    x1, y1 = x0 + (tile_size - 1), y0 + (tile_size - 1)
    best = torch.where((x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0), 0.0, math.inf).to(m.dtype)
    for dx in (x0, x1):
        dy = torch.minimum(torch.maximum(-b * dx / c, y0), y1)
        best = torch.minimum(best, 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy)
    for dy in (y0, y1):
        dx = torch.minimum(torch.maximum(-b * dy / a, x0), x1)
        best = torch.minimum(best, 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy)
    # alpha = opacity exp(-sigma) >= 1/255 <=> sigma <= log(255 opacity), plus the margin.
    return best <= torch.log(opacities.clamp_min(1e-30) / ALPHA_THRESHOLD) + TILE_TEST_MARGIN


@torch.no_grad()
def intersect_tiles(
    means2d: Float[Tensor, "C N 2"],
    radii: Int[Tensor, "C N 2"],
    depths: Float[Tensor, "C N"],
    tile_size: int,
    width: int,
    height: int,
    conics: Optional[Float[Tensor, "C N 3"]] = None,
    opacities: Optional[Float[Tensor, "C N"]] = None,
) -> TileLists:
    """gsplat's tile lists; with `conics` and `opacities`, without the pairs whose tile the
    Gaussian's alpha >= 1/255 ellipse misses (`tile_touches`: the same image, less work).
    `tiles_per_gauss` counts the box's tiles either way, as gsplat's does."""
    n_cams, n = depths.shape
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    dev = means2d.device
    m = means2d.detach().float() / tile_size
    r = radii.float() / tile_size
    x0 = torch.floor(m[..., 0] - r[..., 0]).clamp(0, tw).long()
    x1 = torch.ceil(m[..., 0] + r[..., 0]).clamp(0, tw).long()
    y0 = torch.floor(m[..., 1] - r[..., 1]).clamp(0, th).long()
    y1 = torch.ceil(m[..., 1] + r[..., 1]).clamp(0, th).long()
    visible = (radii > 0).all(-1)
    counts = torch.where(visible, (x1 - x0) * (y1 - y0), 0)  # C N

    # Gaussians in (camera, depth) order; the stable sort keeps index order on depth ties,
    # as gsplat's radix sort over (tile, depth) keys does.
    order = torch.sort(depths.detach(), dim=1, stable=True).indices  # C N
    flat = (order + torch.arange(n_cams, device=dev)[:, None] * n).reshape(-1)
    cnt = counts.reshape(-1)[flat]
    keep = cnt > 0
    flat, cnt = flat[keep], cnt[keep]
    ids = torch.repeat_interleave(flat, cnt)
    start = torch.cumsum(cnt, 0) - cnt
    k = torch.arange(ids.numel(), device=dev) - torch.repeat_interleave(start, cnt)
    wx = (x1 - x0).reshape(-1)[ids]
    tx = x0.reshape(-1)[ids] + k % wx
    ty = y0.reshape(-1)[ids] + torch.div(k, wx, rounding_mode="floor")
    if conics is not None and opacities is not None:
        touch = tile_touches(means2d.reshape(-1, 2)[ids], conics.reshape(-1, 3)[ids], opacities.reshape(-1)[ids],
                             tx, ty, tile_size)
        ids, tx, ty = ids[touch], tx[touch], ty[touch]
    cam = torch.div(ids, n, rounding_mode="floor")
    tile = (cam * th + ty) * tw + tx
    perm = _stable_argsort(tile, n_cams * th * tw)
    tile = tile[perm]
    tile_counts = torch.bincount(tile, minlength=n_cams * th * tw)
    offsets = torch.cumsum(tile_counts, 0) - tile_counts
    return TileLists(ids[perm], offsets, tile_counts, counts.to(torch.int32), tw, th)


# ---------------------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------------------
def _composite_forward(q: Tensor):
    """gsplat's alpha rules from per-pair q = sigma - log(opacity) (B P G), so that the raw
    alpha opacity * exp(-sigma) is exp(-q). Returns (weights w = alpha T, raw alpha, mask
    of pairs composited with an unclamped alpha, T before each pair, 1 - alpha)."""
    raw = torch.exp(-q)
    # gsplat also skips sigma < 0, which a positive-definite conic only gives by rounding;
    # the expanded quadratic form rounds differently, so that test is left out on purpose.
    ok = raw >= ALPHA_THRESHOLD  # clamped alpha >= thr iff raw >= thr
    alpha = torch.where(ok, raw.clamp(max=MAX_ALPHA), 0.0)
    one_minus = 1.0 - alpha
    t_incl = torch.cumprod(one_minus, dim=-1)
    # A pixel is done (this Gaussian and the rest skipped) once T would fall to <= 1e-4;
    # T only decreases, so `keep` is a prefix of each pixel's list.
    keep = t_incl > T_THRESHOLD
    t_excl = t_incl / one_minus  # 1 - alpha >= 0.001
    w = torch.where(keep, alpha * t_excl, 0.0)
    return w, raw, ok & keep & (raw <= MAX_ALPHA), t_excl, one_minus


class _CompositeTiles(torch.autograd.Function):
    """Composite one batch of B tiles of P pixels over G padded candidates each.

    sigma (the Mahalanobis half-distance) is a quadratic form in the tile-local pixel
    position, so with -log(opacity) folded into its constant term every pair comes from
    one matmul, q = feats (P 6) @ coef (B 6 G), and the gradient folds back with one matmul
    too. Per-pair tensors are recomputed in backward (as gsplat's kernel does) instead of
    being kept alive by autograd. Returns colours (B P D) and alphas (B P)."""

    @staticmethod
    def forward(ctx, coef, colors, feats, absgrad, keep: bool):
        pairs = _composite_forward(torch.matmul(feats, coef))
        ctx.save_for_backward(coef, colors, feats)
        ctx.absgrad = absgrad
        # Intermediates (not inputs or outputs), so kept on ctx; dropped by the first backward.
        ctx.pairs = pairs if keep else None
        w = pairs[0]
        return torch.bmm(w, colors), w.sum(-1)

    @staticmethod
    def backward(ctx, v_out, v_alpha_out):
        coef, colors, feats = ctx.saved_tensors
        pairs, ctx.pairs = ctx.pairs, None
        if pairs is None:  # over the render's SAVE_BYTES, or a second backward
            pairs = _composite_forward(torch.matmul(feats, coef))
        w, raw, live, t_excl, one_minus = pairs
        v_colors = torch.bmm(w.transpose(1, 2), v_out)
        # out = sum_i c_i a_i T_i and A = 1 - T_final give
        # dL/da_i = T_i (c_i . v_out) - (sum_{j>i} w_j (c_j . v_out) - T_final v_A) / (1 - a_i).
        cg = torch.bmm(v_out, colors.transpose(1, 2))
        wc = w * cg
        suffix = wc.sum(-1, keepdim=True) - torch.cumsum(wc, dim=-1)
        suffix -= (1.0 - w.sum(-1, keepdim=True)) * v_alpha_out[..., None]
        v_alpha = t_excl * cg - suffix / one_minus
        # alpha = exp(-q) unless skipped, past the stop, or clamped at 0.999.
        v_q = torch.where(live, v_alpha * raw, 0.0).neg_()
        v_coef = torch.matmul(feats.transpose(0, 1), v_q)
        if ctx.absgrad is not None:
            ctx.absgrad.accumulate(v_q, feats)
        return v_coef, v_colors, None, None, None


class _AbsGrad:
    """gsplat's absgrad for one batch: sum over pixels of |d loss/d means2d| per pair,
    scattered by candidate index into `out` (C N 2). d sigma/d mean = (a dx + b dy,
    b dx + c dy) is linear in the pixel: [lx ly 1] @ u."""

    def __init__(self, out: Tensor, idx: Tensor, ux: Tensor, uy: Tensor):
        self.out, self.idx, self.ux, self.uy = out, idx, ux, uy

    def accumulate(self, v_sigma: Tensor, feats: Tensor) -> None:
        lin = feats[:, 3:6]  # lx, ly, 1
        gx = (v_sigma * torch.matmul(lin, self.ux)).abs_().sum(1)
        gy = (v_sigma * torch.matmul(lin, self.uy)).abs_().sum(1)
        flat = self.out.view(-1, 2)
        real = self.idx < flat.shape[0]
        flat.index_add_(0, self.idx[real], torch.stack([gx[real], gy[real]], -1).to(flat.dtype))


def _pixel_feats(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """P 6 features [lx^2, ly^2, lx ly, lx, ly, 1] of pixel centres relative to the tile
    centre (small numbers keep the expanded quadratic form accurate in float32)."""
    local = torch.arange(tile_size, device=device, dtype=torch.float64) + 0.5 - tile_size / 2
    ly = local.repeat_interleave(tile_size)
    lx = local.repeat(tile_size)
    return torch.stack([lx * lx, ly * ly, lx * ly, lx, ly, torch.ones_like(lx)], -1).to(dtype)


def _quad_coefs(mx: Tensor, my: Tensor, conic: Tensor, log_opac: Tensor) -> Tensor:
    """B 6 G coefficients with sigma(l) - log(opacity) = feats(l) @ coef, for tile-local
    means (mx, my)."""
    a, b, c = conic.unbind(-1)
    return torch.stack([
        0.5 * a, 0.5 * c, b,
        -(a * mx + b * my), -(c * my + b * mx),
        0.5 * (a * mx * mx + c * my * my) + b * mx * my - log_opac,
    ], dim=1)


def _composite_autograd(mx: Tensor, my: Tensor, conic: Tensor, log_opac: Tensor,
                        colors: Tensor, px: Tensor, py: Tensor):
    """Plain-autograd compositing from explicit offsets: the oracle for `_CompositeTiles`."""
    dx = mx[:, None, :] - px[:, :, None]
    dy = my[:, None, :] - py[:, :, None]
    a, b, c = conic[:, None, :, 0], conic[:, None, :, 1], conic[:, None, :, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    w = _composite_forward(sigma - log_opac[:, None, :])[0]
    return torch.bmm(w, colors), w.sum(-1)


def composite(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    opacities: Float[Tensor, "C N"],
    colors: Float[Tensor, "C N D"],
    tiles: TileLists,
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
    max_pairs: int = MAX_PAIRS,
    absgrad_out: Optional[Tensor] = None,
    use_autograd: bool = False,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
    """Front-to-back compositing of the tile lists; no background. Returns (colours, alphas).
    `absgrad_out` (C N 2), when given, accumulates gsplat's per-pixel |d loss/d means2d|
    during backward."""
    n_cams, n = opacities.shape
    d = colors.shape[-1]
    dev, dt = means2d.device, means2d.dtype
    tw, th = tiles.tile_width, tiles.tile_height
    p = tile_size * tile_size
    # Flattened per (camera, Gaussian), plus a transparent dummy row used as padding.
    dummy = n_cams * n
    f_m = torch.cat([means2d.reshape(-1, 2), means2d.new_zeros(1, 2)])
    f_con = torch.cat([conics.reshape(-1, 3), conics.new_zeros(1, 3)])
    # log-opacity; the padding row's -1e4 makes its alpha exactly 0 without infinities
    f_lop = torch.cat([torch.log(opacities.reshape(-1).clamp_min(1e-30)), opacities.new_full((1,), -1e4)])
    f_col = torch.cat([colors.reshape(-1, d), colors.new_zeros(1, d)])
    feats = _pixel_feats(tile_size, dt, dev)
    local = feats[:, 3:5]  # lx, ly

    counts = tiles.counts.tolist()
    save_left = SAVE_BYTES if torch.is_grad_enabled() else 0
    nonempty = [t for t in sorted(range(len(counts)), key=counts.__getitem__) if counts[t] > 0]
    rows, row_of_tile = [], torch.full((len(counts),), len(nonempty), dtype=torch.long)
    i = 0
    while i < len(nonempty):
        # Tiles sorted by candidate count: grow the batch while padded pairs fit the budget.
        j = i + 1
        while j < len(nonempty) and (j + 1 - i) * p * counts[nonempty[j]] <= max_pairs:
            j += 1
        batch = nonempty[i:j]
        g = counts[batch[-1]]
        bt = torch.tensor(batch, device=dev)
        slot = torch.arange(g, device=dev)[None, :]
        start = tiles.offsets[bt][:, None] + slot
        inside = slot < tiles.counts[bt][:, None]
        idx = torch.where(inside, tiles.flat_ids[start.clamp(max=tiles.flat_ids.numel() - 1)], dummy)
        tyx = bt % (th * tw)
        # Tile centres: candidates' means are taken relative to them.
        ox = ((tyx % tw) * tile_size + tile_size / 2).to(dt)[:, None]
        oy = (torch.div(tyx, tw, rounding_mode="floor") * tile_size + tile_size / 2).to(dt)[:, None]
        m = f_m[idx]
        mx, my, con = m[..., 0] - ox, m[..., 1] - oy, f_con[idx]
        if use_autograd:
            out, alpha = _composite_autograd(mx, my, con, f_lop[idx], f_col[idx],
                                             local[None, :, 0], local[None, :, 1])
        else:
            ab = None
            if absgrad_out is not None:
                a_, b_, c_ = con.detach().unbind(-1)
                mxd, myd = mx.detach(), my.detach()
                # d sigma/d mx = a (mx - lx) + b (my - ly) = [lx ly 1] @ (-a, -b, a mx + b my)
                ux = torch.stack([-a_, -b_, a_ * mxd + b_ * myd], 1)
                uy = torch.stack([-b_, -c_, b_ * mxd + c_ * myd], 1)
                ab = _AbsGrad(absgrad_out, idx, ux, uy)
            save_left -= len(batch) * p * g * (4 * feats.element_size() + 1)
            out, alpha = _CompositeTiles.apply(_quad_coefs(mx, my, con, f_lop[idx]), f_col[idx],
                                               feats, ab, save_left >= 0)
        rows.append(torch.cat([out, alpha[..., None]], dim=-1).reshape(-1, d + 1))
        row_of_tile[torch.tensor(batch)] = torch.arange(i, j)
        i = j
    rows.append(f_col.new_zeros(p, d + 1))  # the row block of empty tiles

    # Pixel (c, y, x) -> row (row_of_tile[tile] * P + local index) of the stacked tiles.
    yy = torch.arange(height, device=dev)[:, None]
    xx = torch.arange(width, device=dev)[None, :]
    tile_hw = (yy // tile_size) * tw + xx // tile_size
    loc = (yy % tile_size) * tile_size + xx % tile_size
    cams = torch.arange(n_cams, device=dev)[:, None, None] * (th * tw)
    gather = row_of_tile.to(dev)[cams + tile_hw] * p + loc
    img = torch.cat(rows)[gather.reshape(-1)].reshape(n_cams, height, width, d + 1)
    return img[..., :d], img[..., d:]


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Float[Tensor, "C 3"]] = None,
    render_mode: RenderMode = "RGB",
    antialiased: bool = False,
    absgrad: bool = False,
    tile_size: int = TILE_SIZE,
    max_pairs: int = MAX_PAIRS,
    use_autograd: bool = False,
) -> RenderOutput:
    """Render N Gaussians into C cameras (see `splatlab.rasterizer.rasterize`).
    `tile_size`, `max_pairs` tune memory/speed only; `use_autograd` swaps the hand-written
    compositing backward for plain autograd (tests)."""
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    proj, opac, feats = project_with_colors(means, quats, scales, opacities, colors, viewmats, Ks,
                                            width, height, near_plane=near_plane, far_plane=far_plane,
                                            sh_degree=sh_degree, antialiased=antialiased)
    return rasterize_projected(proj.means2d, proj.conics, proj.depths, proj.radii, opac, feats,
                               width, height, backgrounds=backgrounds, render_mode=render_mode,
                               absgrad=absgrad, tile_size=tile_size, max_pairs=max_pairs,
                               use_autograd=use_autograd)


def project_with_colors(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Tensor,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    antialiased: bool = False,
) -> tuple[Projection, Float[Tensor, "C N"], Float[Tensor, "C N D"]]:
    """The per-camera stage of a render: the projection, the opacities (times the
    antialiasing compensation) and the colours (SH evaluated towards each camera)."""
    n_cams = viewmats.shape[0]
    proj = project(means, quats, scales, opacities, viewmats, Ks, width, height,
                   near_plane, far_plane, EPS2D, antialiased)
    opac = opacities[None, :].expand(n_cams, -1)
    if proj.compensations is not None:
        opac = opac * proj.compensations
    if sh_degree is None:
        if colors.dim() == 3 and colors.shape[:2] != (n_cams, means.shape[0]):
            raise ValueError(f"colors {tuple(colors.shape)} must be N D, or C N D per camera, "
                             "when sh_degree is None (SH coefficients need sh_degree)")
        feats = colors if colors.dim() == 3 else colors[None].expand(n_cams, -1, -1)
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # C 3
        dirs = means[None, :, :] - campos[:, None, :]  # C N 3
        feats = sh_to_color(sh_degree, colors[None], dirs, backend="torch")  # C N 3
    return proj, opac, feats


def rasterize_projected(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    depths: Float[Tensor, "C N"],
    radii: Int[Tensor, "C N 2"],
    opacities: Float[Tensor, "C N"],
    feats: Float[Tensor, "C N D"],
    width: int,
    height: int,
    *,
    backgrounds: Optional[Float[Tensor, "C 3"]] = None,
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    tile_size: int = TILE_SIZE,
    max_pairs: int = MAX_PAIRS,
    use_autograd: bool = False,
) -> RenderOutput:
    """The per-pixel stage of a render: tile lists, compositing, background, depth."""
    n_cams = means2d.shape[0]
    bg = backgrounds
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None]], dim=-1)
        if bg is not None:
            bg = torch.cat([bg, bg.new_zeros(n_cams, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None]
        bg = None  # gsplat composites depth over a zero background

    tiles = intersect_tiles(means2d, radii, depths, tile_size, width, height, conics, opacities)
    abs_buf = None
    if absgrad:
        abs_buf = torch.zeros_like(means2d, memory_format=torch.contiguous_format)
        means2d.absgrad = abs_buf  # filled during backward, as gsplat's kernel does
    img, alphas = composite(means2d, conics, opacities, feats, tiles, width, height,
                            tile_size, max_pairs, abs_buf, use_autograd)
    if bg is not None:
        img = img + (1.0 - alphas) * bg[:, None, None, :]
    out_depths = None
    if render_mode in ("ED", "RGB+ED"):
        img = torch.cat([img[..., :-1], img[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    if render_mode != "RGB":
        out_depths = img[..., -1:]

    info = {
        "means2d": means2d, "radii": radii, "depths": depths,
        "conics": conics, "opacities": opacities,
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
        "tile_size": tile_size, "tile_width": tiles.tile_width,
        "tile_height": tiles.tile_height, "tiles_per_gauss": tiles.tiles_per_gauss,
        "width": width, "height": height, "n_cameras": n_cams, "n_batches": 1,
    }
    return RenderOutput(colors=img, alphas=alphas, depths=out_depths, means2d=means2d,
                        radii=radii, info=info)


__all__ = ["rasterize", "project", "project_with_colors", "rasterize_projected", "intersect_tiles", "tile_touches", "composite", "quat_to_rotmat",
           "covariance_3d", "Projection", "TileLists"]
