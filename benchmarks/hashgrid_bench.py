"""Time the hash encoding's forward+backward (triton kernel vs the pure-torch twin) at
nerfacto's size and append one row per backend to benchmarks/RESULTS.md.

    python benchmarks/hashgrid_bench.py                      # 2^20 points, 16 x 2 x 2^19
    python benchmarks/hashgrid_bench.py --points 18 --no-record

Timing: warm-up, then CUDA events around each repeat, median of the repeats. The
backward allocates the zeroed table gradient, which is counted.
Target (issue 10): triton forward+backward at most 2 ms on an H200.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_bench import RESULTS, git_commit, gpu_name  # noqa: E402

SECTION = "## Hash encoding"
HEADER = ("| date | GPU | commit | command | backend | points | levels x features x table | "
          "forward ms | forward+backward ms |\n|---|---|---|---|---|---|---|---|---|\n")


def time_ms(fn, repeats: int, warmup: int, device) -> float:
    import torch

    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        import time

        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)
    ts = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end))
    return statistics.median(ts)


def append_rows(rows: list[str], results: Path = RESULTS) -> None:
    """Add rows at the end of the "Hash encoding" table (created at the end of the file)."""
    lines = results.read_text().rstrip("\n").split("\n") if results.exists() else ["# Benchmarks"]
    if SECTION not in lines:
        lines += ["", SECTION] + HEADER.rstrip("\n").split("\n")
    start = lines.index(SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    last = max(i for i in range(start, end) if lines[i].startswith("|"))
    lines[last + 1 : last + 1] = [r.rstrip("\n") for r in rows]
    tmp = results.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(results)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=20, help="log2 of the number of points")
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--features", type=int, default=2)
    p.add_argument("--log2-table", type=int, default=19)
    p.add_argument("--max-resolution", type=int, default=2048)
    p.add_argument("--backends", default="triton,torch")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)

    import torch

    from splatlab.rasterizer.hashgrid import hash_encode, init_table, level_resolutions

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    n = 1 << args.points
    res = level_resolutions(args.levels, 16, args.max_resolution)
    table = init_table(args.levels, args.log2_table, args.features).to(device).requires_grad_(True)
    x = torch.rand(n, 3, device=device)
    grad_out = torch.randn(n, args.levels * args.features, device=device)
    size = f"{args.levels} x {args.features} x 2^{args.log2_table}"
    command = "python benchmarks/hashgrid_bench.py " + " ".join(argv)
    rows = []
    print(f"{'backend':8} {'points':>9} {'forward ms':>11} {'fwd+bwd ms':>11}")
    for backend in args.backends.split(","):

        def fwd():
            with torch.no_grad():
                hash_encode(x, table, res, backend)

        def fwd_bwd():
            table.grad = None
            hash_encode(x, table, res, backend).backward(grad_out)

        f_ms = time_ms(fwd, args.repeats, args.warmup, device)
        fb_ms = time_ms(fwd_bwd, args.repeats, args.warmup, device)
        print(f"{backend:8} {n:>9,} {f_ms:>11.3f} {fb_ms:>11.3f}")
        rows.append(f"| {datetime.date.today().isoformat()} | {gpu_name()} | {git_commit()} | `{command.strip()}` "
                    f"| {backend} | {n:,} | {size} | {f_ms:.3f} | {fb_ms:.3f} |\n")
    if not args.no_record:
        append_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
