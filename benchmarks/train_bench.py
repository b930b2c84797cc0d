"""Train scenes with presets and append one row per run to benchmarks/RESULTS.md.

    python benchmarks/train_bench.py --data ../shared/data/beer --preset fast --method splat
    python benchmarks/train_bench.py --data ../shared/data/beer --preset fast --strategy mcmc
    python benchmarks/train_bench.py --data demo --preset cpu
    python benchmarks/train_bench.py --data ../shared/data/lego --preset fast --method nerf

`--data` and `--preset` repeat (every scene x every preset); any other `--FIELD VALUE`
after `--` goes to every run's TrainConfig (e.g. `-- --steps 2000 --downscale 2`).
A NeRF row has no Gaussians ("n/a"). The row records what `splatlab train` measured itself (metrics.json): train_seconds is
optimisation only (no loading, no evaluation, no checkpoint writing).
"""

from __future__ import annotations

import argparse
import os
import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HEADER = (
    "| date | GPU | commit | command | steps | train s | steps/s | peak mem GB | Gaussians | test PSNR | test SSIM |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def git_commit() -> str:
    # The GPU machine gets a copy of the tree without .git: the caller passes the commit.
    if os.environ.get("SPLATLAB_COMMIT"):
        return os.environ["SPLATLAB_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gpu_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def append_row(row: str) -> None:
    new = not RESULTS.exists() or not RESULTS.read_text().strip()
    with open(RESULTS, "a") as f:
        if new:
            f.write("# Training benchmarks\n\nAppended by `benchmarks/train_bench.py`; one row per run.\n\n" + HEADER)
        f.write(row)


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the script's own arguments, the `-- --FIELD VALUE ...` passed on to splatlab train)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help="scene path, or `demo` (repeatable)")
    p.add_argument("--preset", action="append", help="preset name (repeatable; default: fast)")
    p.add_argument("--method", default="splat")
    p.add_argument("--strategy", default=None, choices=["default", "mcmc"])
    p.add_argument("--output", default=str(HERE / "runs"), help="parent folder of the run folders")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)

    from splatlab.app.train import parse_args, train

    commit, gpu = git_commit(), gpu_name()
    for data in args.data or ["demo"]:
        for name in args.preset or ["fast"]:
            train_argv = [data, "--preset", name, "--method", args.method]
            if args.strategy == "mcmc":
                # As simple_trainer's MCMC config: its init and regularisers, relocating all along.
                train_argv += ["--strategy", "mcmc", "--init-opacity", "0.5", "--init-scale", "0.1",
                               "--opacity-reg", "0.01", "--scale-reg", "0.01", "--refine-stop", "25000"]
            elif args.strategy:
                train_argv += ["--strategy", args.strategy]
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path(args.output) / f"{Path(data).name}-{name}-{args.strategy or 'default'}-{stamp}"
            train_argv += ["--output", str(out), *extra]
            cfg, _ = parse_args(train_argv)
            result = train(cfg)
            m = result.metrics
            steps_per_s = m["steps"] / m["train_seconds"] if m["train_seconds"] else None
            command = "splatlab train " + " ".join(a for a in train_argv if not a.startswith(str(args.output)))
            command = command.replace(" --output", "")
            row = (f"| {datetime.date.today().isoformat()} | {gpu} | {commit} | `{command}` | {m['steps']} "
                   f"| {m['train_seconds']:.1f} | {fmt(steps_per_s, '.1f')} | {m['peak_memory_gb']:.2f} "
                   f"| {fmt(m.get('num_gaussians'), ',')} | {fmt(m['psnr'], '.2f')} | {fmt(m['ssim'], '.4f')} |\n")
            print(row, end="")
            if not args.no_record:
                append_row(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
