"""`splatlab view TARGET`: open a run folder, checkpoint or 3DGS PLY in the browser viewer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def parse(argv: list[str]) -> argparse.Namespace:
    # A few flags: plain argparse keeps `splatlab view --help` instant (no tyro/torch import).
    p = argparse.ArgumentParser(prog="splatlab view", description=__doc__)
    p.add_argument("target", nargs="+", help="run folder, checkpoint (.pt), 3DGS .ply (INRIA, gsplat, nerfstudio, "
                   "splatlab) or .spz; given several (a glob such as runs/demo-*/), the newest")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; anything else exposes the scene to the network)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    p.add_argument("--client-splats", action="store_true",
                   help="send the Gaussians to the browser (colour only) instead of rendering here")
    p.add_argument("--max-res", type=int, default=None, metavar="PX",
                   help="long side of a still frame, 128..4096 (default 1024 on a GPU, 512 on CPU; the "
                        "Max resolution slider). A NeRF on CPU renders a few thousand rays/s: try 128")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="also accept browsers on this page origin, e.g. http://localhost:9000 for an SSH "
                        "tunnel (repeatable; by default only this viewer's own address is accepted)")
    args = p.parse_args(argv)
    from .runs import newest_of

    args.target = Path(newest_of(args.target))
    return args


def _initial_points(loaded):
    """The scene's initial points (normalized frame), when its source can still be read."""
    sj = loaded.scene_json
    if not sj or not sj.get("points"):
        return None
    try:
        from splatlab.scenes import load_scene

        root, cfg = sj.get("root"), loaded.config or {}
        how = {k: cfg.get(k) for k in ("format", "images", "colmap_path")}  # as the run loaded it
        scene = load_scene(None, **how) if sj.get("format") == "demo" else load_scene(root, **how)
        if scene.points is None:
            return None
        return scene.points, scene.point_colors
    except Exception:  # noqa: BLE001 - the points are a nicety; the dataset may be gone
        return None


def run(argv: list[str]) -> int:
    args = parse(argv)
    from splatlab.viewer.security import normalize_origin

    for origin in args.allow_origin:
        if normalize_origin(origin) is None:
            raise UserError(f"--allow-origin {origin!r} is not a page origin like http://localhost:9000")
    import logging
    import os

    # Viewer problems (a bad camera from a browser, a dropped client) are one line each;
    # --debug also logs every frame sent.
    logging.basicConfig(level=logging.DEBUG if os.environ.get("SPLATLAB_DEBUG") == "1" else logging.WARNING,
                        format="%(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("websockets", "asyncio", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from splatlab.viewer import serve
    from splatlab.viewer.splats import num_primitives

    from .runs import load_target

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_target(args.target, device=device)
    if num_primitives(loaded.renderer) == 0:
        raise UserError("has nothing to show (an empty model)", args.target)
    if args.client_splats and not hasattr(loaded.renderer, "browser_splats"):
        raise UserError(f"--client-splats needs Gaussians; a {loaded.method} model renders here only",
                        args.target)
    sj = loaded.scene_json or {}
    crop_path = loaded.run_dir / "viewer_crop.json" if loaded.run_dir is not None else None
    try:
        server = serve(
            loaded.renderer, cameras=loaded.cameras(), points=_initial_points(loaded),
            host=args.host, port=args.port, client_splats=args.client_splats,
            crop_path=crop_path, background=sj.get("background"),
            normalization=loaded.normalization, allow_origins=tuple(args.allow_origin), max_res=args.max_res,
            block=False,
        )
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    if server.port != args.port:
        print(f"port {args.port} is taken; using {server.port}", file=sys.stderr)
    mode = "browser-side splats" if args.client_splats else f"rendering on {device}"
    stats = ", ".join(f"{v:,} {k}" if isinstance(v, int) else f"{k} {v}"
                      for k, v in loaded.renderer.stats().items())
    print(f"splatlab viewer: {server.url}  ({loaded.method}: {stats}, {mode}; Ctrl-C to stop)", flush=True)
    # pycolmap (imported to read a COLMAP scene's points) installs glog's failure handler,
    # which answers SIGTERM with a native stack dump; stop quietly like Ctrl-C instead.
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.wait()  # stops the server on the way out
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
