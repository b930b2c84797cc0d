"""`splatlab eval RUN`: re-render a run's test views and recompute its metrics.

`evaluate` is the one evaluation: training calls it for metrics.json, this command calls
it again on the saved checkpoint with the same scene loading, so the numbers reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import tyro
from typing_extensions import Annotated

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from splatlab.renderers.base import Renderer
    from splatlab.scenes.types import Scene

LPIPS_UNAVAILABLE = "unavailable: the `lpips` package or its AlexNet weights are not installed locally"


def evaluate(renderer: "Renderer", scene: "Scene", *, device, renders_dir: Optional[Path] = None) -> dict:
    """Render every test view (scene background, full SH degree, deterministic) and
    score it against the image as training loads it. Returns the means and per-view values."""
    import numpy as np
    import torch

    from .data import cameras_on
    from .metrics import cc_psnr, lpips_fn, mean_or_none, psnr, ssim

    lp = lpips_fn(device)
    idx = scene.test_idx
    cams = cameras_on(scene.cameras[idx], device) if idx else None
    bg = None if scene.background is None else torch.tensor([scene.background], device=device)
    views = []
    if renders_dir is not None:
        renders_dir.mkdir(parents=True, exist_ok=True)
    # No cuDNN benchmarking for the SSIM convolutions here: it tries every algorithm, each
    # with its own workspace, once per image size: a transient that can set the run's peak
    # memory, for a few convolutions per evaluation.
    bench, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    try:
        with torch.no_grad():
            for j, i in enumerate(idx):
                img = renderer.render(cams[j], background=bg).rgb.clamp(0, 1)
                gt = torch.from_numpy(scene.images[i]).to(device).unsqueeze(0).float() / 255.0
                view = {"name": scene.images.names[i], "psnr": float(psnr(img, gt)[0]),
                        "cc_psnr": float(cc_psnr(img, gt)[0]),
                        "ssim": float(ssim(img, gt)[0]), "lpips": None if lp is None else float(lp(img, gt)[0])}
                views.append(view)
                if renders_dir is not None:
                    import imageio.v3 as iio

                    arr = (img[0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
                    iio.imwrite(renders_dir / (Path(view["name"]).stem + ".png"), np.ascontiguousarray(arr))
    finally:
        torch.backends.cudnn.benchmark = bench
    return {
        "psnr": mean_or_none([v["psnr"] for v in views]),
        # after each render's best affine colour fit to its ground truth (metrics.cc_psnr)
        "cc_psnr": mean_or_none([v["cc_psnr"] for v in views]),
        "ssim": mean_or_none([v["ssim"] for v in views]),
        "lpips": mean_or_none([v["lpips"] for v in views]),
        "lpips_note": None if lp is not None else LPIPS_UNAVAILABLE,
        "num_test_views": len(views),
        "views": views,
    }


@dataclass
class EvalArgs:
    run: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN [RUN ...]")]
    """Run folder written by `splatlab train` (given several, e.g. a glob: the newest)."""
    device: str = "auto"
    """Torch device; auto uses the device the run was trained on when it is available."""
    save: bool = False
    """Rewrite metrics.json (metric fields) and renders/test/ with the new values."""


def run(argv: list[str]) -> int:
    import json

    from . import runs
    from .config import config_from_json
    from .data import load_data, resolve_device

    args = tyro.cli(EvalArgs, args=argv, prog="splatlab eval",
                    description="Re-render a run's test views and recompute its metrics.")
    run_dir = Path(runs.newest_of(list(args.run)))
    if not runs.is_run_dir(run_dir):
        raise UserError("not a splatlab run folder (no config.json)", run_dir)
    old = {}
    if (run_dir / "metrics.json").exists():
        old = json.loads((run_dir / "metrics.json").read_text())
    device_name = args.device
    if device_name == "auto":
        import torch

        trained_on = str(old.get("device", "auto"))
        device_name = trained_on if (trained_on.startswith("cuda") and torch.cuda.is_available()) else "auto"
    device = resolve_device(device_name)
    if old.get("device") and str(device) != old["device"]:
        print(f"note: trained on {old['device']}, evaluating on {device}: small differences are expected")
    loaded = runs.load_target(run_dir, device)
    cfg = config_from_json(runs._read_json(run_dir / "config.json"))
    scene = load_data(cfg)
    m = evaluate(loaded.renderer, scene, device=device,
                 renders_dir=run_dir / "renders" / "test" if args.save else None)

    stats = ", ".join(f"{v:,} {k}" if isinstance(v, int) else f"{k} {v}"
                      for k, v in loaded.renderer.stats().items())
    print(f"{run_dir} ({loaded.method}, step {loaded.step:,}, {stats}, "
          f"{m['num_test_views']} test views, {device})")
    print(f"{'metric':<7}{'now':>10}{'metrics.json':>14}{'diff':>10}")
    for key in ("psnr", "ssim", "lpips"):
        now, before = m[key], old.get(key)
        fmt = lambda v: "unavailable" if v is None else f"{v:.4f}"  # noqa: E731
        diff = "" if now is None or before is None else f"{now - before:+.4f}"
        print(f"{key:<7}{fmt(now):>10}{fmt(before):>14}{diff:>10}")
    if args.save:
        runs.atomic_write_json(run_dir / "metrics.json", {**old, **m})
        print(f"updated {run_dir / 'metrics.json'}")
    return 0
