"""What a NeRF run's field holds: densities at random points of its box, how many hidden
ReLU units of each density MLP are ever active there, and the largest hash-table entry.
A collapsed run shows every density at the e^30 cap of the truncated exp.

    python benchmarks/nerf_probe.py RUN_DIR [--points 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch


def probe(renderer, points: int = 200_000, seed: int = 0) -> dict:
    """Figures of the field at `points` uniform points of its box (normalized frame)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = renderer.box.lo.cpu(), renderer.box.hi.cpu()
    x = (lo + (hi - lo) * torch.rand(points, 3, generator=g)).to(renderer.device)
    out = {}
    u, _ = renderer.box.to_unit(x)  # every field reads the same box
    with torch.no_grad():
        nets = {"field": (renderer.field.grid, renderer.field.density_mlp, renderer.field.density)}
        nets.update({f"proposal {k + 1}": (p.grid, p.mlp, p.density) for k, p in enumerate(renderer.proposals)})
        for name, (grid, mlp, density) in nets.items():
            hidden = mlp[0](grid(u))
            sigma = density(x).float()
            out[name] = {"units ever active": float((hidden > 0).any(0).float().mean()),
                         "density min": float(sigma.min()), "density max": float(sigma.max()),
                         "at the cap": float((sigma >= math.exp(29)).float().mean()),
                         "table |max|": float(grid.table.abs().max())}
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a NeRF run folder or checkpoint")
    p.add_argument("--points", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from splatlab.app.runs import load_target

    loaded = load_target(args.run, "cuda" if torch.cuda.is_available() else "cpu")
    if loaded.method != "nerf":
        print(f"{args.run}: a {loaded.method} run, not a NeRF", file=sys.stderr)
        return 2
    for name, figs in probe(loaded.renderer, args.points, args.seed).items():
        print(f"{name:>11}: " + ", ".join(f"{k} {v:.4g}" for k, v in figs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
