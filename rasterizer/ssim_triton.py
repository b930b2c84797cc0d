"""The fused photometric loss in Triton: rgb loss (L1 or MSE) + D-SSIM in one forward
and one backward kernel. The torch twin and oracle is `ssim.photometric_loss_torch`,
whose window and constants `ssim.photometric_loss` passes in (this module imports
nothing of ours: ssim.py imports it lazily).

Forward, one program per (image, BH x BW tile of pixels, all channels): the per-pixel
L1/MSE terms, and at the tile's valid window positions the five Gaussian-blurred
statistics (121 taps read straight from the image; neighbouring taps hit the cache),
SSIM, and its partial derivatives with respect to the blurred mean, second moment and
cross moment (three maps, B H-10 W-10 C, kept for backward).
Per-program partial sums (rgb, squared error, SSIM) are reduced by torch, so the
result does not depend on the order of atomics. Backward blurs the three partial maps
with the flipped window (the transpose of a valid convolution) and adds the rgb term.

Inputs may have any strides (the rasterizer's B H W 3 slice included); nothing is
read back to the host: the incoming gradient is read by the kernel from device memory.
"""

from __future__ import annotations

from typing import no_type_check

import torch

import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

# Pixels per program (all channels at once; a tile reads a (BH+10) x (BW+10) patch) and
# warps: compiled for sm_90 this is 64 registers per thread, no spills, in both kernels
# (unrolled tap loops or 4 warps needed 128-255 registers and spilled).
BH, BW, WARPS = 8, 32, 8


@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _fwd_kernel(
    x_ptr, y_ptr, g_ptr, sums_ptr, dmu_ptr, dxx_ptr, dxy_ptr,
    C, H, W, HV, WV, n_th, n_tw,
    sxb, sxc, sxh, sxw, syb, syc, syh, syw,
    C1, C2,
    WIN: tl.constexpr, SAVE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    # H x W x C blocks: the channels innermost, so a channels-last image loads coalesced.
    rows = th * BLOCK_H + tl.arange(0, BLOCK_H)[:, None, None]
    cols = tw * BLOCK_W + tl.arange(0, BLOCK_W)[None, :, None]
    chan = tl.arange(0, BLOCK_C)[None, None, :]
    xb = x_ptr + b * sxb + chan * sxc
    yb = y_ptr + b * syb + chan * syc
    has_c = chan < C

    inside = (rows < H) & (cols < W) & has_c
    xv = tl.load(xb + rows * sxh + cols * sxw, mask=inside, other=0.0)
    yv = tl.load(yb + rows * syh + cols * syw, mask=inside, other=0.0)
    d = xv - yv
    abs_sum = tl.sum(tl.sum(tl.sum(tl.abs(d), axis=2), axis=1), axis=0)
    sq_sum = tl.sum(tl.sum(tl.sum(d * d, axis=2), axis=1), axis=0)

    # SSIM at the window positions whose top-left pixel is in this tile.
    valid = (rows < HV) & (cols < WV) & has_c
    mx = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    my = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    exx = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    eyy = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    exy = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    for a in range(WIN):
        ga = tl.load(g_ptr + a)
        for k in range(WIN):
            wgt = ga * tl.load(g_ptr + k)
            px = tl.load(xb + (rows + a) * sxh + (cols + k) * sxw, mask=valid, other=0.0)
            py = tl.load(yb + (rows + a) * syh + (cols + k) * syw, mask=valid, other=0.0)
            wx = wgt * px
            wy = wgt * py
            mx += wx
            my += wy
            exx += wx * px
            eyy += wy * py
            exy += wx * py
    mx2 = mx * mx
    my2 = my * my
    mxy = mx * my
    a1 = 2.0 * mxy + C1
    a2 = 2.0 * (exy - mxy) + C2
    b1 = mx2 + my2 + C1
    b2 = (exx - mx2) + (eyy - my2) + C2
    den = b1 * b2
    s = (a1 * a2) / den
    s_sum = tl.sum(tl.sum(tl.sum(tl.where(valid, s, 0.0), axis=2), axis=1), axis=0)

    pid = (b * n_th + th) * n_tw + tw
    tl.store(sums_ptr + pid * 3 + 0, abs_sum)
    tl.store(sums_ptr + pid * 3 + 1, sq_sum)
    tl.store(sums_ptr + pid * 3 + 2, s_sum)
    if SAVE:
        # dS/d(mx), dS/d(exx), dS/d(exy) with the blurred moments as the variables
        # (vx = exx - mx^2, cxy = exy - mx my). Stored B HV WV C.
        dmu = (2.0 * my * (a2 - a1) - 2.0 * mx * s * (b2 - b1)) / den
        dxx = -s / b2
        dxy = 2.0 * a1 / den
        off = ((b * HV + rows) * WV + cols) * C + chan
        tl.store(dmu_ptr + off, dmu, mask=valid)
        tl.store(dxx_ptr + off, dxx, mask=valid)
        tl.store(dxy_ptr + off, dxy, mask=valid)


@no_type_check  # keeps pytest's jaxtyping import hook from wrapping the kernel (triton reads its globals)
@triton.jit
def _bwd_kernel(
    x_ptr, y_ptr, g_ptr, gout_ptr, dmu_ptr, dxx_ptr, dxy_ptr, dx_ptr,
    C, H, W, HV, WV,
    sxb, sxc, sxh, sxw, syb, syc, syh, syw, sdb, sdc, sdh, sdw,
    coef_rgb, coef_ssim,
    WIN: tl.constexpr, MSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    rows = th * BLOCK_H + tl.arange(0, BLOCK_H)[:, None, None]
    cols = tw * BLOCK_W + tl.arange(0, BLOCK_W)[None, :, None]
    chan = tl.arange(0, BLOCK_C)[None, None, :]
    has_c = chan < C
    inside = (rows < H) & (cols < W) & has_c
    xv = tl.load(x_ptr + b * sxb + chan * sxc + rows * sxh + cols * sxw, mask=inside, other=0.0)
    yv = tl.load(y_ptr + b * syb + chan * syc + rows * syh + cols * syw, mask=inside, other=0.0)

    # Sum over the windows that cover each pixel: window (r - a, q - k) weighs it g[a] g[k].
    acc_mu = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    acc_xx = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    acc_xy = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
    for a in range(WIN):
        ga = tl.load(g_ptr + a)
        orow = rows - a
        row_ok = (orow >= 0) & (orow < HV) & has_c
        for k in range(WIN):
            wgt = ga * tl.load(g_ptr + k)
            ocol = cols - k
            m = row_ok & (ocol >= 0) & (ocol < WV)
            off = ((b * HV + orow) * WV + ocol) * C + chan
            acc_mu += wgt * tl.load(dmu_ptr + off, mask=m, other=0.0)
            acc_xx += wgt * tl.load(dxx_ptr + off, mask=m, other=0.0)
            acc_xy += wgt * tl.load(dxy_ptr + off, mask=m, other=0.0)

    d = xv - yv
    if MSE:
        g_rgb = 2.0 * d
    else:
        g_rgb = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
    go = tl.load(gout_ptr)
    grad = go * (coef_rgb * g_rgb + coef_ssim * (acc_mu + 2.0 * xv * acc_xx + yv * acc_xy))
    tl.store(dx_ptr + b * sdb + chan * sdc + rows * sdh + cols * sdw, grad, mask=inside)


def _bhwc_strides(t: Tensor) -> tuple[int, int, int, int]:
    """(b, c, h, w) element strides of a B H W C tensor."""
    sb, sh, sw, sc = t.stride()
    return sb, sc, sh, sw


class _FusedPhotometric(torch.autograd.Function):
    @staticmethod
    def forward(ctx, render: Tensor, gt: Tensor, window: Tensor, c1: float, c2: float,
                ssim_lambda: float, mse_loss: bool):
        bsz, h, w, c = render.shape
        win = window.numel()
        hv, wv = h - (win - 1), w - (win - 1)
        dev = render.device
        g = window.to(device=dev, dtype=torch.float32).contiguous()
        n_th, n_tw = triton.cdiv(h, BH), triton.cdiv(w, BW)
        grid = (bsz, n_th, n_tw)
        sums = torch.empty(bsz * n_th * n_tw, 3, device=dev, dtype=torch.float32)
        save = ctx.needs_input_grad[0]
        if save:
            dmu, dxx, dxy = (torch.empty(bsz, hv, wv, c, device=dev, dtype=torch.float32)
                             for _ in range(3))
        else:
            dmu = dxx = dxy = sums  # never written
        _fwd_kernel[grid](
            render, gt, g, sums, dmu, dxx, dxy,
            c, h, w, hv, wv, n_th, n_tw,
            *_bhwc_strides(render), *_bhwc_strides(gt),
            c1, c2,
            WIN=win, SAVE=save, BLOCK_H=BH, BLOCK_W=BW,
            BLOCK_C=triton.next_power_of_2(c), num_warps=WARPS,
        )
        tot = sums.sum(0)  # abs, squared, SSIM
        n_pix, n_win = bsz * c * h * w, bsz * c * hv * wv
        mse = tot[1] / n_pix
        rgb = mse if mse_loss else tot[0] / n_pix
        loss = (1 - ssim_lambda) * rgb + ssim_lambda * (1 - tot[2] / n_win)
        if save:
            ctx.save_for_backward(render, gt, g, dmu, dxx, dxy)
        ctx.ssim_lambda, ctx.mse_loss = ssim_lambda, mse_loss
        ctx.mark_non_differentiable(mse)
        return loss, mse.detach()

    @staticmethod
    def backward(ctx, gloss: Tensor, gmse: Tensor):
        render, gt, g, dmu, dxx, dxy = ctx.saved_tensors
        bsz, h, w, c = render.shape
        win = g.numel()
        hv, wv = h - (win - 1), w - (win - 1)
        lam = ctx.ssim_lambda
        grad = torch.empty(render.shape, device=render.device, dtype=torch.float32)
        grid = (bsz, triton.cdiv(h, BH), triton.cdiv(w, BW))
        _bwd_kernel[grid](
            render, gt, g, gloss.reshape(1).to(torch.float32).contiguous(), dmu, dxx, dxy, grad,
            c, h, w, hv, wv,
            *_bhwc_strides(render), *_bhwc_strides(gt), *_bhwc_strides(grad),
            (1 - lam) / (bsz * c * h * w), -lam / (bsz * c * hv * wv),
            WIN=win, MSE=ctx.mse_loss, BLOCK_H=BH, BLOCK_W=BW,
            BLOCK_C=triton.next_power_of_2(c), num_warps=WARPS,
        )
        return grad, None, None, None, None, None, None


def fused_photometric_loss(
    render: Float[Tensor, "B H W C"], gt: Float[Tensor, "B H W C"], ssim_lambda: float,
    rgb_loss: str, window: Float[Tensor, " K"], c1: float, c2: float,
) -> tuple[Tensor, Tensor]:
    """As `ssim.photometric_loss_torch` (float32 only), in two kernels, for the 1D SSIM
    window `window` (K taps, separable) and constants c1, c2. The gradient flows to
    `render` only. Use it through `ssim.photometric_loss(..., backend="triton")`."""
    win = window.numel()
    if render.shape != gt.shape:
        raise ValueError(f"render {tuple(render.shape)} and gt {tuple(gt.shape)} differ in shape")
    if render.dtype != torch.float32 or gt.dtype != torch.float32:
        raise ValueError("the fused loss takes float32 images")
    if render.shape[1] < win or render.shape[2] < win:
        raise ValueError(f"images smaller than the {win}x{win} SSIM window")
    if gt.requires_grad:
        raise ValueError("the fused loss differentiates the render only; detach gt")
    if rgb_loss not in ("l1", "mse"):
        raise ValueError(f"unknown rgb loss {rgb_loss!r}")
    return _FusedPhotometric.apply(render, gt, window, float(c1), float(c2), float(ssim_lambda),
                                   rgb_loss == "mse")


__all__ = ["fused_photometric_loss"]
