"""Time the training loss on the GPU: the whole photometric loss (torch twin vs the fused
triton kernel, forward + backward), then layouts of the twin's SSIM window blur.

    python benchmarks/ssim_bench.py [--height 720 --width 1280] [--loss-only]

The training loss blurs 5 statistics x 3 channels with an 11-tap separable Gaussian;
cuDNN's choice of kernel depends heavily on how the tensor is laid out."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def gauss(dev):
    x = torch.arange(11, dtype=torch.float64, device=dev) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    return (g / g.sum()).float()


def grouped(s, g):  # B 15 H W, groups=15
    n = s.shape[1]
    s = F.conv2d(s, g.view(1, 1, 1, -1).expand(n, 1, 1, 11), groups=n)
    return F.conv2d(s, g.view(1, 1, -1, 1).expand(n, 1, 11, 1), groups=n)


def batched(s, g):  # 15 1 H W, one channel
    b, n, h, w = s.shape
    s = s.reshape(b * n, 1, h, w)
    s = F.conv2d(s, g.view(1, 1, 1, -1))
    s = F.conv2d(s, g.view(1, 1, -1, 1))
    return s.reshape(b, n, s.shape[-2], s.shape[-1])


def full2d(s, g):
    b, n, h, w = s.shape
    k = (g[:, None] * g[None, :]).view(1, 1, 11, 11)
    s = F.conv2d(s.reshape(b * n, 1, h, w), k)
    return s.reshape(b, n, s.shape[-2], s.shape[-1])


def rows_then_cols(s, g):  # conv1d along W, transpose, conv1d along H
    b, n, h, w = s.shape
    s = F.conv1d(s.reshape(b * n * h, 1, w), g.view(1, 1, -1)).reshape(b * n, h, w - 10)
    s = s.transpose(1, 2).reshape(b * n * (w - 10), 1, h)
    s = F.conv1d(s, g.view(1, 1, -1)).reshape(b * n, w - 10, h - 10).transpose(1, 2)
    return s.reshape(b, n, h - 10, w - 10)


def timeit(fn, s, g, reps=50):
    for _ in range(5):
        fn(s, g).sum().backward()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn(s, g).sum().backward()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def time_loss(backend, render, gt, reps=50):
    from splatlab.rasterizer.ssim import photometric_loss

    def once():
        loss, _ = photometric_loss(render, gt, 0.2, "l1", backend=backend)
        loss.backward()

    for _ in range(5):
        once()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        a.record()
        for _ in range(reps):
            once()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--loss-only", action="store_true", help="only the twin vs fused loss timing")
    a = p.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # as training sets it
    # As in training: the RGB slice of the rasterizer's output, a uint8-derived target.
    full = torch.rand(1, a.height, a.width, 4, device=dev, requires_grad=True)
    render = full[..., :3]
    gt = (torch.rand(1, a.height, a.width, 3, device=dev) * 255).round() / 255
    for backend in ("torch", "triton"):
        try:
            ms = time_loss(backend, render, gt)
        except ImportError as err:
            print(f"loss {backend:6}: unavailable ({err})")
            continue
        print(f"loss {backend:6}: {ms:7.3f} ms fwd+bwd (median of 5 x 50) at {a.width}x{a.height}")
    if a.loss_only:
        return
    g = gauss(dev)
    ref = None
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for name, fn in [("grouped", grouped), ("batched", batched), ("full2d", full2d),
                         ("rows_then_cols", rows_then_cols)]:
            for n in (15, 9):
                s = torch.rand(1, n, a.height, a.width, device=dev, requires_grad=True)
                out = fn(s, g)
                if ref is None or ref[0] != n:
                    ref = (n, grouped(s, g).detach())
                err = (out - ref[1]).abs().max().item()
                print(f"cudnn.benchmark={bench!s:5} {name:15} {n:2} maps  {timeit(fn, s, g):7.3f} ms fwd+bwd  max|diff| {err:.1e}")


if __name__ == "__main__":
    main()
