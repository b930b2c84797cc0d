"""splatlab against the peer (gsplat 1.5.3's simple_trainer) on one scene, back to back,
on the GPU machine; prints both results and the ratios and appends a row to RESULTS.md.

    python benchmarks/peer_compare.py --data .device/data/beer --preset fast
    python benchmarks/peer_compare.py --data .device/data/beer --preset fast --time-to-quality
    python benchmarks/peer_compare.py --data .device/data/beer --preset mcmc --only splatlab \\
        --peer-result "peer /tmp/p: 30000 steps, 384.0 s of training, ..."   # 30k: two device calls

splatlab runs as `splatlab train DATA --preset P` (any further `-- --FIELD VALUE` is passed
on), the peer as `bash .device/peer/run STRATEGY DATA OUT STEPS` with splatlab's step
count. `--time-to-quality` adds `--eval-every 500` to the splatlab run (a benchmark-only
setting: training's stopwatch pauses around each evaluation, so train seconds stay
optimisation only) and reports the first train time at which its test PSNR reaches the
peer's final test PSNR. Before the timed run the fused loss kernels are compiled for the
scene's image sizes (triton's disk cache keeps them; the peer's kernels are compiled ahead
of time too). `--only` runs one side; `--peer-result` supplies the peer's line
from an earlier call in the same device session (30k runs do not fit one 10-minute call).

Peak memory: torch's max allocated over the training steps on both sides (the peer reads
it at its last step, before evaluating; splatlab's metrics.json `peak_memory_gb` likewise,
and `peak_memory_with_eval_gb` adds the final checkpoint and evaluation). splatlab reports
GB (1e9 bytes), the peer GiB; both are shown in GB here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_bench import git_commit, split_extra  # noqa: E402  (one home for each)
RESULTS = HERE / "RESULTS.md"
REPO = HERE.parent
PEER_RUN = REPO / ".device" / "peer" / "run"
SECTION = "## Side by side with the peer"
HEADER = (
    "| date | GPU | commit | command | peer command | steps | train s | peer train s | speed ratio "
    "| test PSNR | peer test PSNR | PSNR diff | Gaussians | peer Gaussians | peak mem GB "
    "| peer peak mem GB | memory ratio | time to peer PSNR s | peer time / that |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)
GIB = 1024**3 / 1e9


class CompareError(Exception):
    """A run failed or printed something this script cannot read."""


@dataclass
class Result:
    """One trainer's run: what both print."""

    steps: int
    train_seconds: float
    psnr: float
    ssim: float
    gaussians: int
    peak_mem_gb: float  # 1e9 bytes

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_seconds

    def line(self, who: str) -> str:
        return (f"{who}: {self.steps} steps, {self.train_seconds:.1f} s of training, "
                f"{self.steps_per_s:.1f} steps/s, test PSNR {self.psnr:.3f}, SSIM {self.ssim:.4f}, "
                f"{self.gaussians:,} Gaussians, {self.peak_mem_gb:.2f} GB")


_PEER = re.compile(
    r"peer (?P<out>.*?): (?P<steps>\d+) steps, (?P<secs>[\d.]+) s of training, [\d.]+ steps/s, "
    r"test PSNR (?P<psnr>[\d.]+), SSIM (?P<ssim>[\d.]+), (?P<gs>\d+) Gaussians, (?P<mem>[\d.]+) GB")


def parse_peer(text: str) -> Result:
    """The peer runner's one summary line (its last matching line in `text`); its memory
    figure is GiB (simple_trainer divides by 1024**3) and is converted to GB."""
    found = None
    for line in text.splitlines():
        m = _PEER.search(line)
        if m:
            found = m
    if found is None:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise CompareError(f"no peer summary line in the peer's output: {tail or '(empty)'}")
    return Result(steps=int(found["steps"]), train_seconds=float(found["secs"]),
                  psnr=float(found["psnr"]), ssim=float(found["ssim"]), gaussians=int(found["gs"]),
                  peak_mem_gb=float(found["mem"]) * GIB)


def read_splat_run(run_dir: Path) -> Result:
    """splatlab's metrics.json of a finished run."""
    path = run_dir / "metrics.json"
    try:
        m = json.loads(path.read_text())
        return Result(steps=int(m["steps"]), train_seconds=float(m["train_seconds"]),
                      psnr=float(m["psnr"]), ssim=float(m["ssim"]),
                      gaussians=int(m["num_gaussians"]), peak_mem_gb=float(m["peak_memory_gb"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CompareError(f"{path}: not a finished run's metrics ({type(err).__name__}: {err})") from None


def eval_times(log_lines: list[str]) -> list[tuple[int, float, float]]:
    """(step, train seconds, test PSNR) of every evaluation in a run's log.jsonl, in step
    order. An EvalDone's train seconds are its own field when the loop records it, else
    those of the StepDone (or TrainFinished) of the same step, which the loop emits
    before evaluating."""
    seconds: dict[int, float] = {}
    evals: list[dict] = []
    for line in log_lines:
        if not line.strip():
            continue
        e = json.loads(line)
        kind = e.get("event")
        if kind in ("StepDone", "TrainFinished") and e.get("train_seconds") is not None:
            seconds[int(e["step"])] = float(e["train_seconds"])
        elif kind == "EvalDone" and e.get("psnr") is not None:
            evals.append(e)
    out = []
    for e in evals:
        step = int(e["step"])
        t = e.get("train_seconds")
        t = seconds.get(step) if t is None else float(t)
        if t is None:
            raise CompareError(f"evaluation at step {step} has no train seconds in the log "
                               "(log_every must divide eval_every)")
        out.append((step, t, float(e["psnr"])))
    return sorted(out)


def time_to_psnr(evals: list[tuple[int, float, float]], target: float) -> Optional[tuple[int, float, float]]:
    """The first evaluation (step, train seconds, PSNR) at or above `target`, or None."""
    for step, t, psnr in evals:
        if psnr >= target:
            return step, t, psnr
    return None


def ratios(ours: Result, peer: Result) -> dict[str, float]:
    """speed: our steps/s over the peer's; psnr_diff: ours minus the peer's (dB);
    memory: our peak over the peer's; time: our train seconds over the peer's."""
    return {"speed": ours.steps_per_s / peer.steps_per_s, "time": ours.train_seconds / peer.train_seconds,
            "psnr_diff": ours.psnr - peer.psnr, "memory": ours.peak_mem_gb / peer.peak_mem_gb}


def summary(ours: Optional[Result], peer: Optional[Result],
            reached: Optional[tuple[int, float, float]], ttq: bool) -> list[str]:
    lines = []
    if ours is not None:
        lines.append(ours.line("splatlab"))
    if peer is not None:
        lines.append(peer.line("peer    "))
    if ours is not None and peer is not None:
        r = ratios(ours, peer)
        lines.append(f"ratio: {r['speed']:.2f}x the peer's steps/s ({r['time']:.2f}x its train time), "
                     f"PSNR {r['psnr_diff']:+.2f} dB, peak memory {r['memory']:.2f}x")
        if ttq:
            if reached is None:
                lines.append(f"time to the peer's PSNR ({peer.psnr:.2f} dB): not reached")
            else:
                step, t, psnr = reached
                lines.append(f"time to the peer's PSNR ({peer.psnr:.2f} dB): {t:.1f} s of training "
                             f"(step {step}, {psnr:.2f} dB) = 1/{peer.train_seconds / t:.2f} of the peer's "
                             f"{peer.train_seconds:.1f} s")
    return lines


def table_row(date: str, gpu: str, commit: str, command: str, peer_command: str, ours: Result,
              peer: Result, reached: Optional[tuple[int, float, float]], ttq: bool) -> str:
    r = ratios(ours, peer)
    if not ttq:
        t_cell = ratio_cell = "n/a"
    elif reached is None:
        t_cell, ratio_cell = "not reached", "n/a"
    else:
        t_cell, ratio_cell = f"{reached[1]:.1f} (step {reached[0]})", f"{peer.train_seconds / reached[1]:.2f}"
    return (f"| {date} | {gpu} | {commit} | `{command}` | `{peer_command}` | {ours.steps} "
            f"| {ours.train_seconds:.1f} | {peer.train_seconds:.1f} | {r['speed']:.2f}x "
            f"| {ours.psnr:.2f} | {peer.psnr:.2f} | {r['psnr_diff']:+.2f} | {ours.gaussians:,} "
            f"| {peer.gaussians:,} | {ours.peak_mem_gb:.2f} | {peer.peak_mem_gb:.2f} | {r['memory']:.2f}x "
            f"| {t_cell} | {ratio_cell} |\n")


INTRO = ("Appended by `benchmarks/peer_compare.py`: splatlab and gsplat 1.5.3's simple_trainer on the "
         "same machine, back to back.")


def insert_row(text: str, row: str, section: str = SECTION, intro: str = INTRO, header: str = HEADER) -> str:
    """RESULTS.md with `row` appended to the table of `section` (the section, `intro` and
    `header` are created at the end of the file the first time)."""
    lines = text.splitlines(keepends=True)
    try:
        at = next(i for i, l in enumerate(lines) if l.strip() == section)
    except StopIteration:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return text + sep + section + "\n\n" + intro + "\n\n" + header + row
    i = at + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    if i == len(lines) or not lines[i].startswith("| date |"):
        return "".join(lines[: at + 1]) + "\n" + header + row + "".join(lines[at + 1 :])
    while i < len(lines) and lines[i].startswith("|"):
        i += 1
    if lines[i - 1] and not lines[i - 1].endswith("\n"):
        lines[i - 1] += "\n"
    return "".join(lines[:i]) + row + "".join(lines[i:])


def gpu_name() -> str:
    # nvidia-smi first: no CUDA context in this process while the trainers measure memory.
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout.strip()
        if out:
            return out.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


WARM_UP = """
import sys, time
from splatlab.app.config import parse_train_args
from splatlab.app.data import load_data, resolve_device
from splatlab.app.losses import warm_up
t = time.perf_counter()
cfg, _ = parse_train_args(sys.argv[1:])
scene = load_data(cfg)
cams = scene.cameras[scene.train_idx]
sizes = {(int(w), int(h)) for w, h in zip(cams.width, cams.height)}
n = warm_up(sizes, resolve_device(cfg.device), cfg.ssim_lambda, cfg.rgb_loss)
print(f"fused loss kernels compiled for {n} of {len(sizes)} image sizes in {time.perf_counter() - t:.1f} s")
"""


def run_logged(cmd: list[str], log: Path) -> str:
    """Run `cmd`, its output into `log` as well; raise CompareError with the tail on failure."""
    print("$ " + shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CompareError(f"exit {proc.returncode}: {shlex.join(cmd)}\n{tail}")
    return proc.stdout


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the scene (e.g. .device/data/beer)")
    p.add_argument("--preset", default="fast", help="splatlab preset (default fast)")
    p.add_argument("--peer-strategy", default="mcmc", choices=["mcmc", "default"])
    p.add_argument("--time-to-quality", action="store_true",
                   help="evaluate splatlab every --eval-every steps; report when it reaches the peer's PSNR")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--only", choices=["splatlab", "peer"], default=None)
    p.add_argument("--peer-result", default=None, help="the peer's summary line from an earlier run")
    p.add_argument("--output", default="/tmp/peer_compare", help="parent folder of both run folders")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--no-warm-up", action="store_true",
                   help="do not compile the fused loss kernels before the timed run (triton's JIT then counts)")
    args = p.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.output)
    data = args.data
    ours: Optional[Result] = None
    peer: Optional[Result] = None
    reached = None
    command = f"splatlab train {data} --preset {args.preset}"
    if args.time_to_quality:
        command += f" --eval-every {args.eval_every}"
    command = " ".join([command, *map(shlex.quote, extra)])
    peer_command = ""
    try:
        if args.peer_result:
            peer = parse_peer(args.peer_result)
        if args.only != "peer":
            run_dir = out / f"splatlab-{stamp}"
            train_args = [data, "--preset", args.preset, "--output", str(run_dir), "--no-save-renders"]
            if args.time_to_quality:
                train_args += ["--eval-every", str(args.eval_every)]
            if not args.no_warm_up:
                # The peer's CUDA code is compiled ahead; ours JIT-compiles on first use.
                print(run_logged([sys.executable, "-c", WARM_UP, *train_args, *extra],
                                 out / f"warm-up-{stamp}.log").strip())
            run_logged([sys.executable, "-m", "splatlab.app.cli", "train", *train_args, *extra],
                       out / f"splatlab-{stamp}.log")
            ours = read_splat_run(run_dir)
        if args.only != "splatlab" and peer is None:
            steps = ours.steps if ours is not None else None
            pcmd = ["bash", str(PEER_RUN), args.peer_strategy, data, str(out / f"peer-{stamp}")]
            if steps is not None:
                pcmd.append(str(steps))
            peer = parse_peer(run_logged(pcmd, out / f"peer-{stamp}.log"))
        if peer is not None:
            peer_command = f"bash .device/peer/run {args.peer_strategy} {data} OUT {peer.steps}"
        if ours is not None and peer is not None and args.time_to_quality:
            lines = (run_dir / "log.jsonl").read_text().splitlines()
            reached = time_to_psnr(eval_times(lines), peer.psnr)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    for line in summary(ours, peer, reached, args.time_to_quality):
        print(line)
    if ours is not None and peer is not None:
        if ours.steps != peer.steps:
            print(f"warning: the runs differ in steps ({ours.steps} vs {peer.steps})", file=sys.stderr)
        row = table_row(datetime.date.today().isoformat(), gpu_name(), git_commit(), command,
                        peer_command, ours, peer, reached, args.time_to_quality)
        print(row, end="")
        if not args.no_record:
            RESULTS.write_text(insert_row(RESULTS.read_text() if RESULTS.exists() else "", row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
