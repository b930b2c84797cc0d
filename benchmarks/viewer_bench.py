"""Viewer streaming benchmark: a headless viser-protocol client at 1280x720.

    python benchmarks/viewer_bench.py RUN_OR_PLY [--seconds 20]          # starts `splatlab view`
    python benchmarks/viewer_bench.py --connect 127.0.0.1:8080 --still --seconds 60  # attach

Measures, with the camera held still: time to the first frame and to the full-resolution
frame (the server sends one full frame for a still camera, then nothing until something
changes); then, with the camera orbiting in small steps at 60 Hz like a dragging mouse,
frames/s delivered and the median size of the frames (the server lowers it to keep the
rate). Prints a markdown row for benchmarks/RESULTS.md.

The orbit (any method: splats, NeRF): for a run folder or its checkpoint, the circle
`splatlab render --path orbit` flies, around the point the training cameras look at, at
their mean distance and height, with their vertical field of view; `--center`/`--radius`
override it (and are what a bare PLY gets). For a scene with a background colour it also
prints how much of the still frame is not background (0% means the orbit misses the scene).

Training slowdown with a still client attached: run `splatlab train ... --viewer` twice,
once with `python benchmarks/viewer_bench.py --connect HOST:PORT --still --seconds 600`
attached and once without, and compare steps/s (see the report / RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

# The headless viser client lives with the tests (it is not part of the shipped package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wsclient import ViserTestClient, look_at_wxyz  # noqa: E402

W, H, FOV = 1280, 720, math.radians(50)
STEP = 0.01  # orbit radians per camera message (60 Hz: 0.6 rad/s)


def _scene_json(target: Optional[str]) -> Optional[dict]:
    """The run's scene.json (with refined poses) for a run folder or one of its checkpoints."""
    if not target:
        return None
    from splatlab.app.runs import run_scene

    return run_scene(target)[1]


class Orbit:
    """Camera poses around a centre: `pose(angle)` -> (wxyz, position, look_at, up)."""

    def __init__(self, center, up, e1, radius: float, height: float, fov: float):
        self.center, self.up, self.e1 = (np.asarray(v, float) for v in (center, up, e1))
        self.e2 = np.cross(self.up, self.e1)
        self.radius, self.height, self.fov = radius, height, fov

    @classmethod
    def from_cameras(cls, cams) -> "Orbit":
        """`camera_paths.orbit`'s circle (focus point, mean up, distance and height) and the
        first camera's vertical field of view."""
        from splatlab.app.camera_paths import orbit
        from splatlab.scenes.geometry import focal_to_fov, focus_point, up_direction

        c2w = cams.camtoworlds.double().numpy()
        start = orbit(cams, 1).camtoworlds[0].double().numpy()
        center, up = focus_point(c2w), up_direction(c2w)
        rel = start[:3, 3] - center
        h = float(rel @ up)
        horiz = rel - h * up
        radius = float(np.linalg.norm(horiz))
        return cls(center, up, horiz / radius, radius, h, focal_to_fov(float(cams.fy[0]), float(cams.height[0])))

    @classmethod
    def default(cls, center, radius: float) -> "Orbit":
        """The fixed z-up circle (radius `radius`, height radius / 2, 50 degree fov)."""
        return cls(center, (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), radius, 0.5 * radius, FOV)

    def pose(self, angle: float):
        eye = (self.center + self.height * self.up
               + self.radius * (math.cos(angle) * self.e1 + math.sin(angle) * self.e2))
        return look_at_wxyz(eye, self.center, self.up), eye, self.center, self.up


def _coverage(jpeg: Optional[bytes], background) -> Optional[float]:
    """Share of a frame's pixels more than 10/255 away from the background colour."""
    if jpeg is None or background is None:
        return None
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)
    return float((np.abs(img - 255.0 * np.asarray(background, np.float32)).max(-1) > 10.0).mean())


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
    p.add_argument("--radius", type=float, default=None,
                   help="orbit radius around the centre (default: from the run's cameras, else 3)")
    p.add_argument("--center", type=float, nargs=3, default=None,
                   help="orbit centre (default: the point the run's cameras look at, else 0 0 0.3)")
    p.add_argument("--max-res", type=int, default=None,
                   help="passed to `splatlab view` (still frames' long side; default the server's)")
    p.add_argument("--still", action="store_true", help="only hold still (for the training-slowdown run)")
    args = p.parse_args()

    sj = _scene_json(args.target)
    if sj is not None and args.center is None and args.radius is None:
        from splatlab.app.runs import cameras_from_json

        path = Orbit.from_cameras(cameras_from_json(sj))
        where = "the run's cameras"
    else:
        path = Orbit.default(args.center if args.center is not None else (0.0, 0.0, 0.3),
                             args.radius if args.radius is not None else 3.0)
        where = "--center/--radius" if (args.center is not None or args.radius is not None) else "the default"
    print(f"orbit from {where}: centre {np.round(path.center, 3).tolist()}, radius {path.radius:.3f}, "
          f"height {path.height:.3f}, up {np.round(path.up, 3).tolist()}, fov {math.degrees(path.fov):.1f} deg",
          flush=True)
    proc = None
    if args.connect:
        host, port = args.connect.rsplit(":", 1)
    else:
        if not args.target:
            p.error("give TARGET or --connect")
        extra = [] if args.max_res is None else ["--max-res", str(args.max_res)]
        proc = subprocess.Popen([sys.executable, "-m", "splatlab.app.cli", "view", args.target, "--port", "8080", *extra],
                                stdout=subprocess.PIPE, text=True)
        line = ""
        while "splatlab viewer:" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                print("viewer failed to start", file=sys.stderr)
                return 1
        host, port = "127.0.0.1", re.search(r":(\d+)\s", line).group(1)
    try:
        client = ViserTestClient(host, int(port), record_sizes=True)

        def send(angle: float) -> None:
            wxyz, eye, center, up = path.pose(angle)
            client.send_camera(wxyz, eye, path.fov, W, H, look_at=center, up=up)

        t0 = time.monotonic()
        send(0.0)
        first = client.wait_frame(600.0)
        if first is None:
            print("no frame within 600 s", file=sys.stderr)
            return 1
        # The full-resolution frame follows ~0.3 s after the camera stops (the first frame
        # is a reduced one; a NeRF on CPU takes a while for the full one).
        if client.wait_frame(300.0) is None:
            print("no full-resolution frame within 300 s", file=sys.stderr)
            return 1
        full = client.frame_times[-1] - t0
        still_size = client.sizes[-1]
        cover = _coverage(client.last_image, None if sj is None else sj.get("background"))
        if cover is not None:
            print(f"still frame {still_size[0]}x{still_size[1]}: {100 * cover:.0f}% of it is not background")
        if args.still:
            client.pump(args.seconds)
            print(f"held still {args.seconds:.0f} s: {client.frames} frames")
            return 0
        n0, s0 = client.frames, len(client.sizes)
        end = time.monotonic() + args.seconds
        angle = 0.0
        while time.monotonic() < end:
            angle += STEP
            send(angle)
            client.pump(1.0 / 60.0)
        fps = (client.frames - n0) / args.seconds
        moving = client.sizes[s0:]
        client.close()
        med = sorted(moving, key=lambda s: s[0] * s[1])[len(moving) // 2] if moving else (0, 0)
        cmd = "python benchmarks/viewer_bench.py " + " ".join(sys.argv[1:])
        print(f"first frame {first:.2f} s, full-res still frame {full:.2f} s ({still_size[0]}x{still_size[1]}), "
              f"orbiting {fps:.1f} frames/s (median frame {med[0]}x{med[1]}, {len(moving)} frames)")
        print("| date | GPU | commit | command | first frame s | still full-res s | orbit fps (1280x720 canvas, "
              "server max res) | median moving frame |")
        print(f"| {datetime.date.today()} | {_gpu()} | {_commit()} | `{cmd}` | {first:.2f} | {full:.2f} | {fps:.1f} "
              f"| {med[0]}x{med[1]} |")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
