"""1 GPU against 2, back to back on one machine (issue 15): wall time, steps/s, images/s,
peak memory per GPU and test PSNR; one row per run in RESULTS.md ("Several GPUs").

    python3 benchmarks/multi_gpu.py --data .device/data/beer --preset fast
    python3 benchmarks/multi_gpu.py --data .device/data/beer --data .device/data/lego --preset fast --preset default
    python3 benchmarks/multi_gpu.py --data .device/data/beer --preset mcmc -- --cap-max 2000000   # a model twice the size

NOT RUN YET: written on a machine without GPUs (no machine with two GPUs was lent); the
CPU twin of the distributed path is tested in CI (tests/test_distributed.py), the NCCL/gsplat
path only by the `cuda` tests there. Needs >= 2 CUDA GPUs for the 2-GPU runs.

Each run is `splatlab train DATA --preset P --gpus N --output ...` in its own subprocess
(splatlab starts the N processes itself, NCCL, NVLink multicast off), so every run starts
clean. Figures come from the run's metrics.json: train s is optimisation only (rank 0's
clock; no loading, evaluation or checkpoint writing), wall s is the whole command. A step
of N GPUs renders N images (one per GPU), so images/s = N x steps/s; the ratio column is
images/s against the 1-GPU run of the same scene and preset in this invocation (target:
>= 1.7x at equal test PSNR). Peak memory is torch's max allocated, per GPU.
Any `-- --FIELD VALUE` goes to every run's `splatlab train`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peer_compare import gpu_name, insert_row  # noqa: E402  (one home for each)
from train_bench import RESULTS, fmt, git_commit, split_extra  # noqa: E402

SECTION = "## Several GPUs"
INTRO = ("Appended by `benchmarks/multi_gpu.py`: the same command with `--gpus 1` and `--gpus 2`, back "
         "to back on one machine. images/s = GPUs x steps/s (one image per GPU per step); x 1 GPU: "
         "images/s against the 1-GPU row above it.")
HEADER = (
    "| date | GPU | commit | command | GPUs | steps | wall s | train s | steps/s | images/s | x 1 GPU "
    "| peak mem GB per GPU | Gaussians | test PSNR | test SSIM |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def run_one(data: str, preset: str, gpus: int, out: Path, extra: list[str]) -> tuple[dict, float, list[str]]:
    """(metrics.json, wall seconds, the train arguments) of one `splatlab train --gpus N`."""
    argv = [data, "--preset", preset, "--gpus", str(gpus), *extra]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "splatlab.app", "train", *argv, "--output", str(out)],
                   check=True, env=env)
    wall = time.perf_counter() - t
    return json.loads((out / "metrics.json").read_text()), wall, argv


def row(date: str, gpu: str, commit: str, argv: list[str], gpus: int, m: dict, wall: float,
        base_images_per_s: float | None) -> tuple[str, float]:
    steps_per_s = m["steps"] / m["train_seconds"] if m["train_seconds"] else float("nan")
    images_per_s = gpus * steps_per_s
    ratio = f"{images_per_s / base_images_per_s:.2f}x" if base_images_per_s else "n/a"
    mems = m.get("peak_memory_gb_per_process") or [m["peak_memory_gb"]]
    mem = " / ".join(f"{v:.2f}" for v in mems)
    text = (f"| {date} | {gpu} | {commit} | `splatlab train {' '.join(argv)}` | {gpus} | {m['steps']} "
            f"| {wall:.1f} | {m['train_seconds']:.1f} | {steps_per_s:.1f} | {images_per_s:.1f} | {ratio} "
            f"| {mem} | {fmt(m.get('num_gaussians'), ',')} | {fmt(m['psnr'], '.2f')} | {fmt(m['ssim'], '.4f')} |\n")
    return text, images_per_s


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, help="scene path (repeatable)")
    p.add_argument("--preset", action="append", help="preset name (repeatable; default: fast)")
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="process counts, in order (default: 1 2)")
    p.add_argument("--output", default=str(HERE / "runs"), help="parent folder of the run folders")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)

    commit, gpu, date = git_commit(), gpu_name(), datetime.date.today().isoformat()
    for data in args.data:
        for preset in args.preset or ["fast"]:
            base = None
            for n in args.gpus:
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                out = Path(args.output) / f"{Path(data).name}-{preset}-{n}gpu-{stamp}"
                m, wall, train_argv = run_one(data, preset, n, out, extra)
                text, images_per_s = row(date, gpu, commit, train_argv, n, m, wall, base)
                if n == 1:
                    base = images_per_s
                print(text, end="", flush=True)
                if not args.no_record:
                    old = RESULTS.read_text() if RESULTS.exists() else ""
                    RESULTS.write_text(insert_row(old, text, SECTION, INTRO, HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
