"""Time the appearance corrections, forward + backward, at a training image's size:
the affine one as a per-image GEMM (`AffineAppearance.forward`) against the per-pixel matmul
it replaced, and the bilateral grid's slice with its atomic-free backward (the CUDA default,
`appearance.slice_grids`) against grid_sample's own (scatter with atomic adds).

    python benchmarks/appearance_bench.py                 # beer's 701 x 1248, CUDA
    python benchmarks/appearance_bench.py --width 64 --height 48 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=701)
    p.add_argument("--height", type=int, default=1248)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from splatlab.renderers.splat.appearance import AffineAppearance

    dev = torch.device(args.device)
    app = AffineAppearance(62).to(dev)
    with torch.no_grad():
        app.deltas.normal_(std=0.05)
    idx = torch.tensor([7], device=dev)
    rgb = torch.rand(1, args.height, args.width, 3, device=dev, requires_grad=True)
    g = torch.rand(1, args.height, args.width, 3, device=dev)

    def old(x, i):  # the per-pixel matmul of 777aaa9 and before
        m = app.matrices(i)[:, None, None]
        return (m[..., :3] @ x.unsqueeze(-1)).squeeze(-1) + m[..., 3]

    def run(fn, params, grad) -> float:
        ts = []
        for k in range(args.repeats + 5):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(rgb, idx)
            torch.autograd.grad(out, [rgb, params], grad)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if k >= 5:
                ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)

    assert torch.allclose(old(rgb, idx), app(rgb, idx), atol=1e-5)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    a, b = run(old, app.deltas, g), run(app, app.deltas, g)
    print(f"{name}, {args.width}x{args.height}: affine forward+backward: per-pixel matmul {a:.3f} ms, "
          f"per-image GEMM {b:.3f} ms ({a / b:.1f}x)")

    from splatlab.renderers.splat.appearance import LUMA, BilateralGridAppearance, slice_grids

    bil = BilateralGridAppearance(62).to(dev)
    with torch.no_grad():
        bil.deltas.normal_(std=0.05)
    g12 = torch.rand(1, args.height, args.width, 12, device=dev)

    def bilateral(atomic_free: bool) -> float:
        def fn(x, i):
            return slice_grids(bil.grids(i), x @ x.new_tensor(LUMA), atomic_free=atomic_free)

        return run(fn, bil.deltas, g12)

    a, b = bilateral(False), bilateral(True)
    print(f"{name}, {args.width}x{args.height}: bilateral slice forward+backward: grid_sample {a:.3f} ms, "
          f"atomic-free backward {b:.3f} ms ({a / b:.1f}x)")


if __name__ == "__main__":
    main()
