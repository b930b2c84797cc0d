"""Profile the training step: torch.profiler over ~200 steps of the real loop, then the
top ops by device (CUDA) time, or CPU time on a CPU.

    python benchmarks/profile_step.py --data ../shared/data/beer --preset fast
    python benchmarks/profile_step.py --data ../shared/data/beer --preset fast --start 2000 --trace /tmp/step.json

It trains `--start` steps unprofiled first (densification grows the model, so the
steady-state step is what matters), then profiles `--steps` more. The loop is the
real one (`splatlab.app.train.train`), driven through its events: profiling starts on
the StepDone of step `--start` and stops at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import split_extra  # noqa: E402


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="demo")
    p.add_argument("--preset", default="fast")
    p.add_argument("--strategy", default=None, choices=["default", "mcmc"])
    p.add_argument("--start", type=int, default=1000, help="unprofiled warm-up steps")
    p.add_argument("--steps", type=int, default=200, help="profiled steps")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--trace", default=None, help="also write a Chrome trace here")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from splatlab.app.events import EventBus, StepDone
    from splatlab.app.train import parse_args, train

    out = tempfile.mkdtemp(prefix="profile_step-")
    total = args.start + args.steps
    train_argv = [args.data, "--preset", args.preset, "--output", out, "--steps", str(total),
                  "--log-every", str(math.gcd(args.start, total) or total),
                  "--checkpoint-every", str(10 * total), "--no-save-renders", *extra]
    if args.strategy == "mcmc":
        train_argv += ["--strategy", "mcmc", "--init-opacity", "0.5", "--init-scale", "0.1",
                       "--opacity-reg", "0.01", "--scale-reg", "0.01", "--refine-stop", "25000"]
    elif args.strategy:
        train_argv += ["--strategy", args.strategy]
    cfg, _ = parse_args(train_argv)
    # Keep the schedule of the full preset (refine windows, LR decay) but stop early.
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=acts)
    state = {"t0": None}

    def on_step(e: StepDone) -> None:
        if e.step == args.start and state["t0"] is None:
            prof.start()
            state["t0"] = time.perf_counter()
        elif e.step == total and state.get("t1") is None:  # before the final checkpoint/eval
            prof.stop()
            state["t1"] = time.perf_counter()
            state["gaussians"] = e.stats.get("Gaussians", 0)

    bus = EventBus()
    bus.subscribe(on_step, StepDone)
    if args.start == 0:
        prof.start()
        state["t0"] = time.perf_counter()
    train(cfg, bus=bus)
    wall = state["t1"] - state["t0"]
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
    print(f"profiled steps {args.start}..{total}: {wall:.2f} s wall with the profiler on "
          f"({args.steps / wall:.1f} steps/s), {state['gaussians']:,} Gaussians at the end")
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"trace: {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
