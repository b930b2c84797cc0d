"""`splatlab train [DATA] [--preset NAME] [--output DIR] [--resume RUN] [--viewer] [--FIELD VALUE ...]`

One readable training loop (`train`). Everything else in this file prepares its inputs
(scene, model, optimizers, strategy) or writes its outputs (run folder, checkpoints,
metrics). The loop emits typed events (app/events.py); the progress display, the JSONL
log and the live viewer subscribe to them.

Speed: the loop never synchronises with the GPU per step. Loss and PSNR accumulate on
the device and are read back every `log_every` steps (that readback is also the NaN
check); images sit on the device as uint8; the train view order is drawn on the host.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from splatlab.renderers.splat import SplatModel
    from splatlab.scenes.types import Scene

    from .config import TrainConfig
    from .events import EventBus

CHECKPOINT_VERSION = 1


class TrainingDiverged(UserError):
    """NaN/Inf in the loss or the parameters; the last good checkpoint is kept."""


# ---- command line ---------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple["TrainConfig", Optional[Path]]:
    """--preset and --resume first; every other flag overrides a field of the preset
    (or of the resumed run's saved config)."""
    import argparse

    import tyro

    from . import runs
    from .config import PRESETS, TrainConfig, presets_help, preset

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--resume", default=None)
    known, rest = pre.parse_known_args(argv)
    resume = None
    if known.resume is not None:
        resume = Path(known.resume)
        if not runs.is_run_dir(resume):
            raise UserError("not a splatlab run folder (no config.json) to resume", resume)
        if runs.latest_checkpoint(resume) is None:
            raise UserError("run folder has no checkpoint to resume from", resume / runs.CHECKPOINT_DIR)
        base = TrainConfig.from_json(runs._read_json(resume / "config.json"))
        if any(a == "--preset" or a.startswith("--preset=") for a in argv):
            raise UserError("--resume continues with the run's saved config; drop --preset")
    else:
        name = known.preset
        if name is None:
            # The 30k-step schedule would take hours on a CPU: pick the CPU preset there,
            # say so, and let --preset override.
            name = "default" if _cuda_wanted(rest) else "cpu"
            if name == "cpu" and not any(a in ("-h", "--help") for a in rest):
                print("no CUDA GPU: using --preset cpu (pass --preset to choose another)",
                      file=sys.stderr)
        base = preset(name)
    description = (
        "Train a Gaussian splatting model. Pick a preset with --preset NAME (default: default), "
        "then override any field below.\n\npresets:\n" + presets_help()
        + "\n\n--resume RUN continues a run folder from its newest checkpoint, with its saved config."
    )
    cfg = tyro.cli(TrainConfig, default=base, args=rest, description=description,
                   prog="splatlab train")
    if cfg.method not in ("splat",):
        raise UserError(f"unknown method {cfg.method!r}")
    assert PRESETS  # presets are part of the help above
    return cfg, resume


def _cuda_wanted(argv: list[str]) -> bool:
    """Will this run be on CUDA (an explicit --device, else whether CUDA is available)?"""
    for i, a in enumerate(argv):
        if a.startswith("--device="):
            return a.split("=", 1)[1].startswith("cuda")
        if a == "--device" and i + 1 < len(argv):
            return argv[i + 1].startswith("cuda")
    import torch

    return torch.cuda.is_available()


def run(argv: list[str]) -> int:
    cfg, resume = parse_args(argv)
    from .events import EventBus
    from .progress import ProgressDisplay

    bus = EventBus()
    display = ProgressDisplay()
    bus.subscribe(display)
    try:
        result = train(cfg, bus=bus, resume=resume)
    finally:
        display.close()
    return result.exit_code


# ---- inputs ---------------------------------------------------------------------------
def resolve_device(name: str) -> "torch.device":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    return dev


def load_data(cfg: "TrainConfig") -> "Scene":
    """DATA -> Scene: `demo`/None is the built-in scene; a known scene format loads
    directly; a bare photo folder or a video is posed first by `splatlab process`."""
    from splatlab.scenes import SceneError, find_format, load_scene

    from splatlab.scenes.capture.video import is_video

    if cfg.data is None or (cfg.data == "demo" and not Path("demo").exists()):
        return load_scene(None, downscale=cfg.downscale, test_every=cfg.test_every)
    path = Path(cfg.data)
    if not path.exists():
        raise UserError("no such scene folder, photo folder or video", path)
    try:
        needs_poses = find_format(path).NAME == "images"  # a bare photo folder
    except SceneError:
        if not is_video(path):
            raise
        needs_poses = True
    if needs_poses:
        from splatlab.scenes.capture.process import posed_dataset

        path = Path(posed_dataset(path))
    return load_scene(path, downscale=cfg.downscale, test_every=cfg.test_every)


def init_model(cfg: "TrainConfig", scene: "Scene", extent: float, device) -> "SplatModel":
    """From the scene's points, or `init_num_points` uniform in a box of the scene's size."""
    import numpy as np
    import torch

    from splatlab.renderers.splat import SplatModel
    from splatlab.renderers.splat.model import scene_init_points

    g = torch.Generator().manual_seed(cfg.seed)
    half = cfg.init_extent * extent
    lo, hi = (np.full(3, -half), np.full(3, half)) if scene.bounds is None else scene.bounds
    pts, cols = scene_init_points(scene.points, scene.point_colors, lo, hi,
                                  cfg.init_num_points, generator=g)
    if 0 < cfg.init_max_points < len(pts):
        keep = torch.randperm(len(pts), generator=g)[: cfg.init_max_points]
        pts, cols = pts[keep], cols[keep]
    model = SplatModel.from_points(pts.to(device), cols.to(device), cfg.sh_degree,
                                   init_opacity=cfg.init_opacity, init_scale=cfg.init_scale)
    return model


def make_optimizers(cfg: "TrainConfig", model: "SplatModel", extent: float) -> dict[str, Any]:
    """One Adam per parameter group (gsplat's strategies edit them by name), fused on CUDA
    so each is one kernel launch. eps=1e-15 as 3DGS: the tiny gradients of far-away
    Gaussians still move them."""
    import torch

    lrs = {"means": cfg.lr_means * extent, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN}
    fused = model.splats["means"].is_cuda
    return {
        name: torch.optim.Adam([{"params": [p], "lr": lrs[name], "name": name}], eps=1e-15,
                               fused=True if fused else None)
        for name, p in model.splats.items()
    }


def means_lr(cfg: "TrainConfig", extent: float, step: int) -> float:
    """Exponential decay from lr_means*extent to lr_means_final of it at the last step."""
    return cfg.lr_means * extent * cfg.lr_means_final ** (min(step, cfg.steps) / max(cfg.steps, 1))


def active_sh_degree(cfg: "TrainConfig", step: int) -> int:
    return min(step // max(cfg.sh_degree_interval, 1), cfg.sh_degree)


def default_run_dir(scene_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{scene_name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


@dataclass
class TrainImages:
    """Training views on the device: uint8 images (RGBA when random backgrounds need
    the alpha), world-to-camera matrices and intrinsics, indexed 0..len-1."""

    images: list  # uint8 H W 3|4 tensors (a list: sizes may differ)
    viewmats: Any  # C 4 4
    Ks: Any  # C 3 3
    sizes: list  # (width, height)
    names: list

    @classmethod
    def load(cls, scene: "Scene", idx: list[int], device, with_alpha: bool) -> "TrainImages":
        import torch

        cams = scene.cameras[idx]
        imgs = []
        for i in idx:
            arr = scene.images.load_rgba(i) if with_alpha else scene.images[i]
            imgs.append(torch.from_numpy(arr).to(device))
        return cls(imgs, cams.viewmats().to(device), cams.Ks().to(device),
                   [(int(w), int(h)) for w, h in zip(cams.width, cams.height)],
                   [scene.images.names[i] for i in idx])


class Stopwatch:
    """Training time only: paused around evaluation, checkpoints and viewer pauses.
    On CUDA it synchronises at pause/stop so queued GPU work is counted."""

    def __init__(self, device):
        import torch

        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.total = 0.0
        self._t0: Optional[float] = None

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def pause(self) -> None:
        if self._t0 is not None:
            self._sync()
            self.total += time.perf_counter() - self._t0
            self._t0 = None

    def now(self) -> float:
        return self.total + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)


class StopFlag:
    """SIGINT/SIGTERM -> finish the current step, checkpoint, exit. A second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signals only reach the main thread; embedding code handles its own
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


# ---- outputs --------------------------------------------------------------------------
def _to_cpu(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def params_finite(model: "SplatModel") -> "torch.Tensor":
    import torch

    return torch.stack([torch.isfinite(p).all() for p in model.splats.values()]).all()


def save_checkpoint(run_dir: Path, step: int, model, optimizers, strategy_state, cfg,
                    scene, train_seconds: float, keep: int) -> Path:
    import random

    import torch

    from splatlab.renderers.splat.strategy import state_to

    from . import runs

    ckpt = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "model": model.state(),
        "optimizers": {k: _to_cpu(o.state_dict()) for k, o in optimizers.items()},
        "strategy_state": state_to(strategy_state, "cpu"),
        "config": cfg.to_json(),
        "normalization": scene.normalization.to_json(),
        "train_seconds": float(train_seconds),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
        },
    }
    path = runs.checkpoint_path(run_dir, step)
    runs.atomic_torch_save(path, ckpt)
    old = sorted((run_dir / runs.CHECKPOINT_DIR).glob("step_*.pt"))
    for p in old[: max(len(old) - max(keep, 1), 0)]:
        p.unlink(missing_ok=True)
    return path


def peak_memory(device) -> tuple[float, str]:
    """(GB, what it measures): CUDA max allocated, or the process peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9, "cuda_max_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "process_peak_rss"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str  # "done" | "interrupted"
    exit_code: int
    metrics: Optional[dict] = None


class ViewerHookup:
    """Subscriber that feeds the live viewer: publishes activated copies of the splats at
    most every `interval_s`, and holds training (stopwatch paused) while the viewer's
    pause button is down."""

    def __init__(self, feed, stopwatch: Stopwatch, stop: StopFlag, interval_s: float = 0.2):
        self.feed, self.stopwatch, self.stop, self.interval_s = feed, stopwatch, stop, interval_s
        self._last = float("-inf")
        self.stats: dict[str, Any] = {}

    def __call__(self, e) -> None:
        from .events import SplatsUpdated, StepDone

        if isinstance(e, StepDone):
            self.stats = {"step": e.step, "loss": e.loss, "psnr": e.psnr,
                          "steps_per_s": e.steps_per_sec, "num_gaussians": e.num_gaussians}
            return
        if not isinstance(e, SplatsUpdated):
            return
        if self.feed.is_paused():
            self.publish(e, force=True)
            self.stopwatch.pause()
            while self.feed.is_paused() and not self.stop:
                self.feed.wait_while_paused(timeout=0.25)
            self.stopwatch.start()
        self.publish(e)

    def publish(self, e, force: bool = False) -> None:
        import torch

        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        m = e.model
        with torch.no_grad():
            splats = {"means": m.means.detach().clone(), "quats": m.quats.detach().clone(),
                      "scales": m.scales.detach(), "opacities": m.opacities.detach(),
                      "sh": m.sh.detach()}
        self.feed.publish(splats, e.sh_degree, {**self.stats, "step": e.step,
                                                 "num_gaussians": e.num_gaussians})


def start_viewer(cfg: "TrainConfig", scene: "Scene", model: "SplatModel", step: int,
                 stopwatch: Stopwatch, stop: StopFlag):
    """The live viewer on its own threads, fed by a `ViewerHookup` subscriber."""
    from splatlab.viewer import LiveFeed, serve
    from .events import SplatsUpdated

    feed = LiveFeed()
    hookup = ViewerHookup(feed, stopwatch, stop)
    # Publish before serving so the viewer sees the training device and SH degree.
    hookup.publish(SplatsUpdated(step, model, model.sh_degree, model.num_gaussians), force=True)
    pts = None if scene.points is None else (scene.points, scene.point_colors)
    server = serve(feed=feed, cameras=scene.cameras[scene.train_idx], points=pts,
                   port=cfg.viewer_port, background=scene.background,
                   normalization=scene.normalization, block=False)
    return server, hookup


# ---- the training loop ----------------------------------------------------------------
def train(cfg: "TrainConfig", *, bus: Optional["EventBus"] = None, resume: Optional[Path] = None,
          run_dir: Optional[Path] = None) -> TrainResult:
    """Train `cfg` into a run folder (new, or `resume`d from its newest checkpoint)."""
    import random

    import torch

    from splatlab.renderers.splat import strategy as strat

    from . import events as ev
    from . import runs
    from .eval import evaluate
    from .losses import photometric_loss

    bus = bus or ev.EventBus()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # A scene's image sizes are fixed, so cuDNN can pick its fastest SSIM convolutions once.
        torch.backends.cudnn.benchmark = True
    if cfg.steps < 1:
        raise UserError(f"--steps must be positive, got {cfg.steps}")

    ckpt = runs.load_checkpoint(runs.latest_checkpoint(resume), device) if resume else None
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    scene = load_data(cfg)
    if not scene.train_idx:
        raise UserError("the scene has no training views", scene.root)
    for w in scene.warnings:
        bus.emit(ev.Note(w, "warning"))
    extent = scene.extent * 1.1  # gsplat's scene_scale: camera spread, with a margin

    run_dir = Path(resume or run_dir or cfg.output or default_run_dir(scene.name))
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(run_dir / "config.json", cfg.to_json())
    runs.atomic_write_json(run_dir / "scene.json", runs.scene_to_json(scene))
    log = ev.JsonlLogger(run_dir / "log.jsonl")
    bus.subscribe(log)

    # Model, optimizers, strategy: fresh, or exactly as checkpointed.
    if ckpt is None:
        model = init_model(cfg, scene, extent, device)
    else:
        from splatlab.renderers.splat import SplatModel

        model = SplatModel.from_state(ckpt["model"], device)
    optimizers = make_optimizers(cfg, model, extent)
    strategy = strat.make_strategy(
        cfg.strategy, refine_start=cfg.refine_start, refine_stop=cfg.refine_stop,
        refine_every=cfg.refine_every, reset_every=cfg.reset_every, grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d, prune_opa=cfg.prune_opa, prune_scale3d=cfg.prune_scale3d,
        absgrad=cfg.absgrad, cap_max=cfg.cap_max, noise_lr=cfg.noise_lr,
    )
    strategy.check_sanity(model.splats, optimizers)
    strategy_state = strat.initial_state(strategy, extent)
    start = 0
    prior_seconds = 0.0
    if ckpt is not None:
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        strategy_state = strat.state_to(ckpt["strategy_state"], device)
        start = int(ckpt["step"])
        prior_seconds = float(ckpt.get("train_seconds", 0.0))
        rng = ckpt.get("rng") or {}
        if rng.get("torch") is not None:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng.get("python") is not None:
            random.setstate(rng["python"])

    has_alpha = scene.images.alpha(scene.train_idx[0]) is not None
    random_bg = cfg.random_background and has_alpha
    data = TrainImages.load(scene, scene.train_idx, device, with_alpha=random_bg)
    background = None if scene.background is None else torch.tensor([scene.background], device=device)
    n_train = len(scene.train_idx)

    def view_order(epoch: int) -> list[int]:
        # Shuffled epochs, a pure function of (seed, epoch): resume needs no saved state.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        return torch.randperm(n_train, generator=g).tolist()

    stopwatch = Stopwatch(device)
    stop = StopFlag()
    server = None
    if cfg.viewer:
        server, hookup = start_viewer(cfg, scene, model, start, stopwatch, stop)
        bus.subscribe(hookup, ev.StepDone, ev.SplatsUpdated)
        bus.emit(ev.Note(f"live viewer: {getattr(server, 'url', f'http://localhost:{cfg.viewer_port}')}"))
    wants_splats = bus.wants(ev.SplatsUpdated)

    bus.emit(ev.TrainStarted(
        run_dir=str(run_dir), scene=scene.name, method=cfg.method, strategy=cfg.strategy,
        device=str(device), start_step=start, total_steps=cfg.steps, num_train=n_train,
        num_test=len(scene.test_idx), num_gaussians=model.num_gaussians))

    zero = torch.zeros((), device=device)
    loss_sum, logmse_sum, window = zero.clone(), zero.clone(), 0
    window_t0 = 0.0
    last_ckpt: Optional[Path] = runs.latest_checkpoint(run_dir)
    reason, step = "done", start
    order, order_epoch = [], -1

    def check_finite(step: int, what: str) -> None:
        """Read the window's loss back (one sync) and refuse NaN/Inf."""
        nonlocal loss_sum, logmse_sum, window, window_t0
        vals = torch.stack([loss_sum, logmse_sum, params_finite(model).float()]).tolist()
        bad = None
        if not math.isfinite(vals[0]) or not math.isfinite(vals[1]):
            bad = "the loss is NaN/Inf"
        elif vals[2] < 1:
            bad = "the parameters hold NaN/Inf"
        if bad:
            keep = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written"
            msg = (f"training diverged by step {step} ({bad}; {what}); {keep}. "
                   "Try lower learning rates or another --seed.")
            bus.emit(ev.TrainFinished(step, str(run_dir), stopwatch.now() + prior_seconds, "diverged", msg))
            raise TrainingDiverged(msg)
        if window:
            t = stopwatch.now()
            bus.emit(ev.StepDone(
                step=step, total_steps=cfg.steps, loss=vals[0] / window,
                psnr=-10.0 * vals[1] / window, num_gaussians=model.num_gaussians,
                sh_degree=active_sh_degree(cfg, step - 1), lr_means=means_lr(cfg, extent, step),
                steps_per_sec=window / max(t - window_t0, 1e-9), train_seconds=t + prior_seconds))
            window_t0 = t
        loss_sum.zero_(), logmse_sum.zero_()
        window = 0

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt
        stopwatch.pause()
        check_finite(step, "at a checkpoint")  # never write a bad checkpoint
        last_ckpt = save_checkpoint(run_dir, step, model, optimizers, strategy_state, cfg,
                                    scene, stopwatch.total + prior_seconds, cfg.keep_checkpoints)
        bus.emit(ev.CheckpointSaved(step, str(last_ckpt)))
        stopwatch.start()

    stop.install()
    stopwatch.start()
    try:
        for step in range(start, cfg.steps):
            epoch, pos = divmod(step, n_train)
            if epoch != order_epoch:
                order, order_epoch = view_order(epoch), epoch
            i = order[pos]
            width, height = data.sizes[i]
            gt = data.images[i].unsqueeze(0).float() / 255.0  # 1 H W 3|4
            bg = background
            if random_bg:
                bg = torch.rand(1, 3, device=device)
                gt = gt[..., :3] * gt[..., 3:] + bg[:, None, None, :] * (1 - gt[..., 3:])
            sh_degree = active_sh_degree(cfg, step)

            out = model.render(data.viewmats[i : i + 1], data.Ks[i : i + 1], width, height,
                               sh_degree=sh_degree, backgrounds=bg, absgrad=cfg.absgrad)
            strat.pre_backward(strategy, model.splats, optimizers, strategy_state, step, out.info)
            loss, mse = photometric_loss(out.rgb, gt, cfg.ssim_lambda)
            if cfg.opacity_reg > 0:
                loss = loss + cfg.opacity_reg * model.opacities.mean()
            if cfg.scale_reg > 0:
                loss = loss + cfg.scale_reg * model.scales.mean()
            loss.backward()

            lr = means_lr(cfg, extent, step)
            optimizers["means"].param_groups[0]["lr"] = lr
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            n_before = model.num_gaussians
            strat.post_backward(strategy, model.splats, optimizers, strategy_state, step, out.info, lr)
            if model.num_gaussians != n_before:
                bus.emit(ev.RefineDone(step + 1, n_before, model.num_gaussians))

            loss_sum += loss.detach()
            logmse_sum += torch.log10(mse)
            window += 1
            done = step + 1
            if wants_splats:
                bus.emit(ev.SplatsUpdated(done, model, sh_degree, model.num_gaussians))
            if stop:
                reason, step = "interrupted", done
                checkpoint(done)
                break
            if done % cfg.log_every == 0:
                check_finite(done, "at a log step")
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                checkpoint(done)
            if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < cfg.steps:
                stopwatch.pause()
                m = evaluate(model, scene, device=device)
                bus.emit(ev.EvalDone(done, m["psnr"], m["ssim"], m["lpips"], m["num_test_views"]))
                stopwatch.start()
        if reason == "done":
            step = cfg.steps
            if start < cfg.steps:
                checkpoint(cfg.steps)
    except BaseException:
        log.close()
        if server is not None:
            server.stop()
        raise
    finally:
        stopwatch.pause()
        stop.restore()
    train_seconds = stopwatch.total + prior_seconds

    if reason == "interrupted":
        cmd = f"splatlab train --resume {run_dir}"
        msg = f"interrupted at step {step:,}; checkpoint saved. Resume with: {cmd}"
        bus.emit(ev.TrainFinished(step, str(run_dir), train_seconds, reason, msg))
        log.close()
        if server is not None:
            server.stop()
        return TrainResult(run_dir, step, reason, 130 if stop.signum == signal.SIGINT else 143)

    # Final outputs: PLY in original coordinates, test metrics and renders.
    from splatlab.renderers.splat.io import write_ply

    write_ply(model, run_dir / "splat.ply", normalization=scene.normalization)
    metrics = evaluate(model, scene, device=device,
                       renders_dir=run_dir / "renders" / "test" if cfg.save_renders else None)
    mem, mem_kind = peak_memory(device)
    metrics = {
        "psnr": metrics["psnr"], "ssim": metrics["ssim"], "lpips": metrics["lpips"],
        "num_test_views": metrics["num_test_views"], "num_gaussians": model.num_gaussians,
        "steps": step, "train_seconds": round(train_seconds, 3),
        "peak_memory_gb": round(mem, 4), "peak_memory_kind": mem_kind, "device": str(device),
        "lpips_note": metrics["lpips_note"], "views": metrics["views"],
    }
    runs.atomic_write_json(run_dir / "metrics.json", metrics)
    bus.emit(ev.EvalDone(step, metrics["psnr"], metrics["ssim"], metrics["lpips"],
                         metrics["num_test_views"]))
    psnr_txt = "n/a" if metrics["psnr"] is None else f"{metrics['psnr']:.2f} dB"
    bus.emit(ev.TrainFinished(step, str(run_dir), train_seconds, "done",
                              f"done: {step:,} steps in {train_seconds:.1f} s of training, "
                              f"test PSNR {psnr_txt}, {model.num_gaussians:,} Gaussians -> {run_dir}"))
    log.close()
    if server is not None:
        print(f"training finished; the viewer keeps serving at {getattr(server, 'url', '')} "
              "(Ctrl-C to quit)", file=sys.stderr)
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return TrainResult(run_dir, step, reason, 0, metrics)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))
