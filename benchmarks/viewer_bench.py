"""Viewer streaming benchmark: a headless viser-protocol client at 1280x720.

    python benchmarks/viewer_bench.py RUN_OR_PLY [--seconds 20]          # starts `splatlab view`
    python benchmarks/viewer_bench.py --connect 127.0.0.1:8080 --still --seconds 60  # attach

Measures, with the camera held still: time to the first frame and to the full-resolution
frame (the server sends one full frame for a still camera, then nothing until something
changes); then, with the camera orbiting in small steps at 60 Hz like a dragging mouse,
frames/s delivered. Prints a markdown row for benchmarks/RESULTS.md.

Training slowdown with a still client attached: run `splatlab train ... --viewer` twice,
once with `python benchmarks/viewer_bench.py --connect HOST:PORT --still --seconds 600`
attached and once without, and compare steps/s (see the report / RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
import subprocess
import sys
import time

from pathlib import Path

import numpy as np

# The headless viser client lives with the tests (it is not part of the shipped package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wsclient import ViserTestClient, look_at_wxyz  # noqa: E402

W, H, FOV = 1280, 720, math.radians(50)


def _gpu() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "?"


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="run folder / checkpoint / PLY to serve (omit with --connect)")
    p.add_argument("--connect", help="HOST:PORT of a running viewer instead of starting one")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--radius", type=float, default=3.0, help="orbit radius around the centre")
    p.add_argument("--center", type=float, nargs=3, default=(0.0, 0.0, 0.3))
    p.add_argument("--still", action="store_true", help="only hold still (for the training-slowdown run)")
    args = p.parse_args()

    proc = None
    if args.connect:
        host, port = args.connect.rsplit(":", 1)
    else:
        if not args.target:
            p.error("give TARGET or --connect")
        proc = subprocess.Popen([sys.executable, "-m", "splatlab.app.cli", "view", args.target, "--port", "8080"],
                                stdout=subprocess.PIPE, text=True)
        line = ""
        while "splatlab viewer:" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                print("viewer failed to start", file=sys.stderr)
                return 1
        host, port = "127.0.0.1", re.search(r":(\d+)\s", line).group(1)
    try:
        client = ViserTestClient(host, int(port))
        center = np.asarray(args.center, float)

        def eye(angle: float) -> np.ndarray:
            return center + args.radius * np.array([math.cos(angle), math.sin(angle), 0.5])

        e = eye(0.0)
        t0 = time.monotonic()
        client.send_camera(look_at_wxyz(e, center), e, FOV, W, H, look_at=center)
        first = client.wait_frame(60.0)
        # The full-resolution frame follows ~0.3 s after the camera stops (unless the
        # first frame already was full resolution: then none comes, after 10 s we move on).
        client.wait_frame(10.0)
        full = (client.frame_times[-1] - t0) if client.frame_times else float("nan")
        if args.still:
            client.pump(args.seconds)
            print(f"held still {args.seconds:.0f} s: {client.frames} frames")
            return 0
        n0 = client.frames
        end = time.monotonic() + args.seconds
        angle = 0.0
        while time.monotonic() < end:
            angle += 0.01
            e = eye(angle)
            client.send_camera(look_at_wxyz(e, center), e, FOV, W, H, look_at=center)
            client.pump(1.0 / 60.0)
        fps = (client.frames - n0) / args.seconds
        client.close()
        cmd = "python benchmarks/viewer_bench.py " + " ".join(sys.argv[1:])
        print(f"first frame {first:.2f} s, full-res still frame {full:.2f} s, orbiting {fps:.1f} frames/s")
        print("| date | GPU | commit | command | first frame s | still full-res s | orbit fps (1280x720 canvas, server max res) |")
        print(f"| {datetime.date.today()} | {_gpu()} | {_commit()} | `{cmd}` | {first:.2f} | {full:.2f} | {fps:.1f} |")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
