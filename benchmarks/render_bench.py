"""Render speed of a trained model: forward only, at 1280x720, from every test camera.

    python benchmarks/render_bench.py RUN_DIR [--width 1280 --height 720 --repeats 20]

Each test camera's intrinsics are rescaled to the requested size. After a warm-up, every
camera is rendered `--repeats` times between CUDA events; the row reports the median
over cameras of frames per second, and appends it to benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_bench import git_commit, gpu_name  # noqa: E402

RESULTS = HERE / "RESULTS.md"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)

    import torch

    from splatlab.app.runs import load_target

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_target(args.run, dev)
    model, sj = loaded.model, loaded.scene_json
    cams = loaded.cameras()
    test = sj["test_idx"] or list(range(len(cams)))
    fps = []
    with torch.no_grad():
        for i in test:
            c = cams[[i]]
            sx, sy = args.width / float(c.width[0]), args.height / float(c.height[0])
            K = c.Ks().to(dev)
            K[:, 0] *= sx
            K[:, 1] *= sy
            vm = c.viewmats().to(dev)
            render = lambda: model.render(vm, K, args.width, args.height)  # noqa: E731
            for _ in range(3):
                render()
            if dev.type == "cuda":
                torch.cuda.synchronize()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(args.repeats):
                    render()
                b.record()
                torch.cuda.synchronize()
                ms = a.elapsed_time(b) / args.repeats
            else:
                import time

                t = time.perf_counter()
                for _ in range(args.repeats):
                    render()
                ms = 1e3 * (time.perf_counter() - t) / args.repeats
            fps.append(1e3 / ms)
    med = statistics.median(fps)
    print(f"{len(fps)} test cameras at {args.width}x{args.height}, {model.num_gaussians:,} Gaussians: "
          f"median {med:.0f} FPS (min {min(fps):.0f}, max {max(fps):.0f})")
    if not args.no_record:
        row = (f"| {datetime.date.today()} | {gpu_name()} | {git_commit()} | "
               f"`python benchmarks/render_bench.py {args.run}` | {args.width}x{args.height} | "
               f"{model.num_gaussians:,} | {len(fps)} | {med:.0f} | {min(fps):.0f} |\n")
        with open(RESULTS, "a") as f:
            f.write("\n### Render speed (forward only)\n\n| date | GPU | commit | command | size | Gaussians | "
                    "cameras | median FPS | min FPS |\n|---|---|---|---|---|---|---|---|---|\n" + row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
