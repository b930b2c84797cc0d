"""NeRF time to quality: train with test evaluations along the way, print test PSNR against
training seconds, and the first training time at which each `--target` PSNR is reached.

    python benchmarks/nerf_bench.py --data .lego/lego --preset fast --eval-every 2000 --target 34 --target 35
    python benchmarks/nerf_bench.py --data demo --preset cpu --eval-every 200 --no-record
    python benchmarks/nerf_bench.py --write-subset .lego/lego --from ../shared/data/lego --subset-every 10

Training runs the real loop (`splatlab train DATA --method nerf --preset P --eval-every N`,
any further `-- --FIELD VALUE` is passed on); evaluations pause its stopwatch, so the
seconds are optimisation only, as in metrics.json. Rows (one per evaluation, the last one
bold where it is the final test PSNR) go to RESULTS.md, section "NeRF time to quality".

`--write-subset DST --from SRC` copies a Blender scene with every training image and every
`--subset-every`-th test image (and a transforms_test.json listing just those) into DST: the
GPU machine's carry is 64 MiB, and lego's 200 test images alone are 81 MB. Nothing is
written inside SRC.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peer_compare import gpu_name, insert_row  # noqa: E402
from train_bench import RESULTS, git_commit, split_extra  # noqa: E402

SECTION = "## NeRF time to quality"
INTRO = ("Appended by `benchmarks/nerf_bench.py`: test PSNR at each `--eval-every` evaluation of one "
         "run, against optimisation seconds (evaluations pause the stopwatch).")
HEADER = ("| date | GPU | commit | command | step | train s | test PSNR | first reaches |\n"
          "|---|---|---|---|---|---|---|---|\n")


def curve(log_path: Path) -> list[tuple[int, float, float]]:
    """(step, training seconds, test PSNR) of every evaluation in a run's log.jsonl; the
    seconds are those of the log step at (or just before) the evaluation."""
    seconds: dict[int, float] = {}
    out: dict[int, tuple[int, float, float]] = {}  # by step: the last evaluation of a step counts
    for line in log_path.read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "StepDone":
            seconds[e["step"]] = e["train_seconds"]
        elif e.get("event") == "EvalDone" and e.get("psnr") is not None:
            before = [s for s in seconds if s <= e["step"]]
            out[e["step"]] = (e["step"], seconds[max(before)] if before else 0.0, float(e["psnr"]))
    return sorted(out.values())


def first_reaching(points: list[tuple[int, float, float]], target: float) -> Optional[tuple[int, float]]:
    """(step, seconds) of the first evaluation at or above `target` dB, or None."""
    return next(((s, t) for s, t, p in points if p >= target), None)


def write_subset(src: Path, dst: Path, every: int) -> int:
    """Copy a Blender scene's training split and every `every`-th test frame; returns the
    number of test frames kept."""
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise SystemExit(f"--write-subset: {dst} is inside the source scene {src}")
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"--write-subset: {dst} exists and is not empty")
    for name in ("transforms_train.json", "transforms_test.json"):
        if not (src / name).is_file():
            raise SystemExit(f"--from {src}: no {name} (not a Blender scene)")
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        meta = json.loads((src / f"transforms_{split}.json").read_text())
        frames = meta["frames"] if split == "train" else meta["frames"][::max(every, 1)]
        for f in frames:
            rel = f["file_path"].removeprefix("./")
            matches = [p for p in (src / rel, src / (rel + ".png")) if p.is_file()]
            if not matches:
                raise SystemExit(f"--from {src}: frame {f['file_path']} has no image")
            (dst / matches[0].relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(matches[0], dst / matches[0].relative_to(src))
        (dst / f"transforms_{split}.json").write_text(json.dumps({**meta, "frames": frames}, indent=1))
    return len(frames)  # the test split's, the last written


def main(argv: list[str]) -> int:
    argv, extra = split_extra(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="scene path, or `demo`")
    p.add_argument("--preset", default="fast")
    p.add_argument("--eval-every", type=int, default=2000, help="steps between test evaluations")
    p.add_argument("--target", type=float, action="append", default=[], help="test PSNR to time (repeatable)")
    p.add_argument("--output", default=str(HERE / "runs"), help="parent folder of the run folder")
    p.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    p.add_argument("--write-subset", metavar="DST", help="write a Blender subset to DST and stop")
    p.add_argument("--from", dest="src", metavar="SRC", help="with --write-subset: the Blender scene")
    p.add_argument("--subset-every", type=int, default=10, help="with --write-subset: keep every N-th test frame")
    args = p.parse_args(argv)

    if args.write_subset:
        if not args.src:
            p.error("--write-subset needs --from SRC")
        n = write_subset(Path(args.src), Path(args.write_subset), args.subset_every)
        print(f"wrote {args.write_subset}: every training frame, {n} test frames")
        return 0
    if not args.data:
        p.error("--data is required")

    from splatlab.app.train import parse_args, train

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.output) / f"nerf-{Path(args.data).name}-{args.preset}-{stamp}"
    train_argv = [args.data, "--method", "nerf", "--preset", args.preset, "--eval-every", str(args.eval_every),
                  "--output", str(out), *extra]
    cfg, _ = parse_args(train_argv)
    result = train(cfg)
    points = curve(out / "log.jsonl")
    final = result.metrics.get("psnr")
    command = "splatlab train " + " ".join(a for a in train_argv if a not in ("--output", str(out)))
    reached = {t: first_reaching(points, t) for t in args.target}
    print(f"{'step':>7} {'train s':>8} {'test PSNR':>10}")
    for s, t, psnr in points:
        print(f"{s:>7} {t:>8.1f} {psnr:>10.2f}")
    for t, hit in reached.items():
        print(f"{t:.2f} dB: " + (f"step {hit[0]}, {hit[1]:.1f} s" if hit else "not reached"))
    if not args.no_record:
        date, gpu, commit = datetime.date.today().isoformat(), gpu_name(), git_commit()
        text = RESULTS.read_text() if RESULTS.exists() else ""
        for k, (s, t, psnr) in enumerate(points):
            last = k == len(points) - 1
            hits = ", ".join(f"{tg:.1f} dB" for tg, h in reached.items() if h and h[0] == s) or "-"
            shown = f"**{psnr:.2f}** (final)" if last and final is not None and abs(final - psnr) < 1e-6 else f"{psnr:.2f}"
            text = insert_row(text, f"| {date} | {gpu} | {commit} | `{command}` | {s} | {t:.1f} | {shown} | {hits} |\n",
                              SECTION, INTRO, HEADER)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
