"""Profile the training step: torch.profiler over ~200 steps of the real loop, then the
top ops by device (CUDA) time, or CPU time on a CPU.

    python benchmarks/profile_step.py --data ../shared/data/beer --preset fast
    python benchmarks/profile_step.py --data ../shared/data/beer --preset fast --start 2000 --trace /tmp/step.json

It trains `--start` steps unprofiled first (densification grows the model, so the
steady-state step is what matters), then profiles `--steps` more. The loop is the
real one (`splatlab.app.train.train`), driven through its events: profiling starts on
the StepDone of step `--start` and stops at the end.

`--memory` (CUDA) measures GPU memory instead: torch's max allocated (the figure the
peer's simple_trainer reports as "mem") per phase of the run (loading, first step,
steady steps, the last `--steps` steps, final checkpoint, final evaluation), and what is
alive at the peak of the last `--steps` steps, grouped by the code that allocated it
(from torch's allocator history):

    python benchmarks/profile_step.py --memory --data .device/data/beer --preset fast --start 6990 --steps 10
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
    p.add_argument("--memory", action="store_true",
                   help="GPU memory per phase and what is alive at the peak, instead of time")
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
    if args.memory:
        return memory_report(cfg, args.start, total, args.rows)
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


# ---- --memory -------------------------------------------------------------------------
_REPO = str(Path(__file__).resolve().parents[1])


def frame_label(frames: list[dict]) -> str:
    """Where an allocation came from: the innermost frame (frames are innermost first, as
    torch's snapshots list them) in this repository, gsplat or torch.optim."""
    for f in frames:
        fn = f.get("filename", "")
        if fn == __file__ or fn.endswith("profile_step.py"):
            continue
        if fn.startswith(_REPO) or "/splatlab/" in fn or "/gsplat/" in fn or "/torch/optim/" in fn:
            return f"{'/'.join(Path(fn).parts[-2:])}:{f.get('name', '?')}:{f.get('line', '?')}"
    return "(no frame in splatlab/gsplat/torch.optim)" if frames else "(no stack recorded)"


def live_blocks(snapshot: dict) -> dict[int, tuple[int, list]]:
    """addr -> (size, frames) of the allocated blocks of a torch.cuda.memory._snapshot()."""
    live = {}
    for seg in snapshot.get("segments", []):
        for b in seg.get("blocks", []):
            if b.get("state") == "active_allocated":
                live[b["address"]] = (b["size"], b.get("frames", []))
    return live


def peak_of_trace(live: dict[int, tuple[int, list]], trace: list[dict]) -> tuple[int, dict]:
    """Replay allocator events (alloc / free_completed) from the live set `live`: the
    largest total allocated and the live set at that moment."""
    live = dict(live)
    total = sum(size for size, _ in live.values())
    best, at_best = total, dict(live)
    for e in trace:
        act = e.get("action")
        if act == "alloc":
            live[e["addr"]] = (e["size"], e.get("frames", []))
            total += e["size"]
            if total > best:
                best, at_best = total, dict(live)
        elif act == "free_completed" and e["addr"] in live:
            total -= live.pop(e["addr"])[0]
    return best, at_best


def group_blocks(live: dict[int, tuple[int, list]]) -> list[tuple[str, int, int]]:
    """(label, bytes, blocks) per allocating place, largest first."""
    sizes: dict[str, list[int]] = {}
    for size, frames in live.values():
        sizes.setdefault(frame_label(frames), []).append(size)
    return sorted(((k, sum(v), len(v)) for k, v in sizes.items()), key=lambda r: -r[1])


def memory_report(cfg, start: int, total: int, rows: int) -> int:
    import torch

    from splatlab.app.events import CheckpointSaved, EvalDone, EventBus, ModelUpdated, TrainStarted
    from splatlab.app.train import train

    if not torch.cuda.is_available():
        print("--memory needs a CUDA device (torch's allocator statistics)", file=sys.stderr)
        return 2
    cm = torch.cuda.memory
    gb = 1e9
    phases: list[tuple[str, float, float]] = []
    snaps: dict[str, dict] = {}

    def mark(name: str) -> None:
        torch.cuda.synchronize()
        phases.append((name, torch.cuda.memory_allocated() / gb, torch.cuda.max_memory_allocated() / gb))
        torch.cuda.reset_peak_memory_stats()

    def on_event(e) -> None:
        if isinstance(e, TrainStarted):
            mark("load: scene, images on the GPU, model, strategy")
        elif isinstance(e, ModelUpdated):
            if e.step == 1:
                mark("step 1 (with the loss kernels' warm-up)")
            if e.step == start and start > 1:
                mark(f"steps 2..{start}")
            if e.step == start:
                snaps["before"] = cm._snapshot()
                cm._record_memory_history(enabled="all", context="all", stacks="python", max_entries=2_000_000)
            if e.step == total:
                mark(f"steps {start + 1}..{total} (recorded)")
                snaps["after"] = cm._snapshot()
                cm._record_memory_history(enabled=None)
        elif isinstance(e, CheckpointSaved) and e.step == total:
            mark("final checkpoint")
        elif isinstance(e, EvalDone) and e.step == total:
            mark("final evaluation (test renders, metrics)")

    bus = EventBus()
    for kind in (TrainStarted, ModelUpdated, CheckpointSaved, EvalDone):
        bus.subscribe(on_event, kind)
    torch.cuda.reset_peak_memory_stats()
    # Stacks of every live block from the start (no history yet), so the images, the
    # parameters and the optimizer state are named at the peak too.
    cm._record_memory_history(enabled="state", context="state", stacks="python")
    try:
        res = train(cfg, bus=bus)
    finally:
        cm._record_memory_history(enabled=None)
    print(f"GPU memory (torch max allocated, GB = 1e9 bytes; the peer reports GiB = {1024**3 / gb:.4f} GB):")
    print(f"{'phase':<48} {'allocated at end':>17} {'peak in phase':>14}")
    for name, now, peak in phases:
        print(f"{name:<48} {now:>17.3f} {peak:>14.3f}")
    if res.metrics:
        print(f"metrics.json: peak_memory_gb {res.metrics.get('peak_memory_gb')} (training steps), "
              f"peak_memory_with_eval_gb {res.metrics.get('peak_memory_with_eval_gb')}")
    if "before" in snaps and "after" in snaps:
        dev = torch.cuda.current_device()
        traces = snaps["after"].get("device_traces", [])
        trace = traces[dev] if dev < len(traces) else []
        best, at = peak_of_trace(live_blocks(snaps["before"]), trace)
        print(f"\nalive at the peak of steps {start + 1}..{total}: {best / gb:.3f} GB in {len(at)} blocks "
              f"({len(trace)} allocator events replayed), by the code that allocated it:")
        for label, size, n in group_blocks(at)[:rows]:
            print(f"  {size / gb:8.4f} GB  {n:6d} blocks  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
