"""`splatlab train [DATA] [--method NAME] [--preset NAME] [--output DIR] [--resume RUN] [--viewer] [--FIELD VALUE ...]`

One readable training loop (`train`) for every method in `renderers.RENDERERS`: it
builds the renderer, one Adam per parameter group, and a batch sampler; per step it
renders, adds the photometric loss and the renderer's extra losses, steps, and calls the
renderer's hooks; it emits typed events (app/events.py), checkpoints (app/runs.py) and
evaluates (app/eval.py). It never names a method.

Speed: the loop never synchronises with the GPU per step. Loss, PSNR and a NaN/Inf flag
accumulate on the device and are read back every `log_every` steps (and before every
checkpoint); images sit on the device as uint8.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import UserError
from .host import keep_freed_host_memory

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from splatlab.renderers.base import ParamGroup, Renderer, TrainConfig

    from .distributed import World
    from .events import EventBus


class TrainingDiverged(UserError):
    """NaN/Inf in the loss or the parameters, or a model left with no parameters; the
    last good checkpoint is kept."""


def parse_args(argv: list[str]) -> tuple["TrainConfig", Optional[Path]]:
    """(config, run folder to resume or None): see `config.parse_train_args`."""
    from .config import parse_train_args

    return parse_train_args(argv)


def run(argv: list[str]) -> int:
    cfg, resume = parse_args(argv)
    from .distributed import launch, wants_launch

    if wants_launch(cfg):  # --gpus N: N worker processes, each running `train_and_report`
        return launch(worker, (cfg, resume), cfg.gpus, cfg.device)
    return train_and_report(cfg, resume)


def train_and_report(cfg: "TrainConfig", resume: Optional[Path]) -> int:
    """Train with the progress display, then point runs/latest at the run (of several
    processes, rank 0 alone shows and links)."""
    from .events import EventBus
    from .progress import ProgressDisplay

    main = int(os.environ.get("RANK", "0")) == 0
    bus = EventBus()
    display = ProgressDisplay() if main else None
    if display is not None:
        bus.subscribe(display)
    try:
        result = train(cfg, bus=bus, resume=resume)
    finally:
        if display is not None:
            display.close()
    from . import runs

    link = runs.update_latest(result.run_dir) if main else None
    if link is not None:
        print(f"latest run: {link} -> {result.run_dir.name}  (e.g. splatlab view {link})")
    return result.exit_code


def worker(cfg: "TrainConfig", resume: Optional[Path]) -> int:
    """One of the `--gpus N` processes: `train_and_report`, errors in one line as the CLI's."""
    import traceback

    from splatlab.scenes.errors import SceneError

    try:
        return train_and_report(cfg, resume)
    except (SceneError, UserError) as e:
        if os.environ.get("SPLATLAB_DEBUG") == "1":
            traceback.print_exc()
        rank = int(os.environ.get("RANK", "0"))
        print(f"error: {e}" if rank == 0 else f"error (process {rank}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# ---- what the loop is made of ---------------------------------------------------------
def default_run_dir(scene_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{scene_name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def make_optimizers(groups: list["ParamGroup"]) -> dict[str, Any]:
    """One Adam per parameter group, named like the group (a densification strategy edits
    them by name), fused on CUDA so each is one kernel launch."""
    from splatlab.rasterizer.optim import make_adam

    return {g.name: make_adam(g.params, g.lr, g.eps, name=g.name, weight_decay=g.weight_decay,
                              selective=g.selective) for g in groups}


def set_learning_rates(optimizers: dict, groups: list["ParamGroup"], step: int, total: int) -> dict:
    lrs = {g.name: g.lr_at(step, total) for g in groups}
    for name, lr in lrs.items():
        optimizers[name].param_groups[0]["lr"] = lr
    return lrs


def num_parameters(optimizers: dict) -> int:
    """Host-side shapes only (no sync): what the optimizers hold now."""
    return sum(p.numel() for o in optimizers.values() for g in o.param_groups for p in g["params"])


class Window:
    """Loss and log10 MSE summed on the device since the last read (two kernels a step). A
    NaN/Inf loss in any step leaves the sum non-finite, which the read reports."""

    def __init__(self, device, reduce=None):
        import torch

        self.reduce = reduce  # several processes: the mean over the ranks
        self.loss = torch.zeros((), device=device)
        self.logmse = torch.zeros((), device=device)
        self.n, self.t0 = 0, 0.0

    def add(self, loss: "torch.Tensor", mse: "torch.Tensor") -> None:
        import torch

        torch._foreach_add_([self.loss, self.logmse], [loss.detach(), torch.log10(mse)])
        self.n += 1

    def read(self, optimizers: dict) -> tuple[float, float, Optional[str]]:
        """(mean loss, PSNR, what is not finite or None): one device->host read."""
        import torch

        finite = torch.stack([torch.isfinite(p).all() for o in optimizers.values()
                              for g in o.param_groups for p in g["params"]]).all()
        values = torch.stack([self.loss, self.logmse, finite.float()])
        if self.reduce is not None:
            values = self.reduce(values)  # any rank's NaN/Inf makes the mean non-finite, ok < 1
        loss, logmse, ok = values.tolist()
        n = max(self.n, 1)
        problem = ("the loss is NaN/Inf" if not math.isfinite(loss) else
                   "the parameters hold NaN/Inf" if ok < 1 else None)
        self.loss.zero_(), self.logmse.zero_()
        self.n = 0
        return loss / n, -10.0 * logmse / n, problem


COLLAPSE_DB = 10.0


class CollapseCheck:
    """A run whose train PSNR falls `drop_db` below the best it reached has collapsed (a NeRF
    whose densities all ran to their cap renders one colour, and never recovers): better to
    stop there, keeping the last good checkpoint, than to train on for hours. Refinement
    dips (opacity resets, relocation) cost a few dB, not ten."""

    def __init__(self, drop_db: float = COLLAPSE_DB):
        self.drop_db, self.best = drop_db, -math.inf

    def update(self, psnr: float) -> Optional[str]:
        """What went wrong, or None; `psnr` is one log window's train PSNR."""
        if psnr < self.best - self.drop_db:
            return f"the train PSNR fell from {self.best:.1f} to {psnr:.1f} dB"
        self.best = max(self.best, psnr)
        return None


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


def uses_conv_ssim(cfg: "TrainConfig", method, sampler) -> bool:
    """Whether training computes SSIM with torch's convolutions (the twin) rather than the
    fused kernel: the torch backend asked for, no triton, or masked views."""
    from splatlab.rasterizer.ssim import triton_available

    from .losses import loss_backend

    if method.batch_kind != "image" or cfg.ssim_lambda <= 0:
        return False
    masked = any(m is not None for m in getattr(sampler, "masks", ()))
    return masked or loss_backend() == "torch" or not triton_available()


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


class Bookkeeping:
    """What the loop's logging, divergence check and checkpoints share."""

    def __init__(self, cfg: "TrainConfig", run_dir: Path, bus: "EventBus", device, scene,
                 prior_seconds: float, last_ckpt: Optional[Path], world: "World", sharded: set[str]):
        self.cfg, self.run_dir, self.bus, self.scene = cfg, run_dir, bus, scene
        self.world, self.sharded = world, sharded
        self.stopwatch = Stopwatch(device)
        self.window = Window(device, world.mean if world.size > 1 else None)
        self.collapse = CollapseCheck()
        self.prior_seconds, self.last_ckpt = prior_seconds, last_ckpt
        self.train_peak: Optional[float] = None  # peak memory of the training steps (GB)

    def seconds(self) -> float:
        return self.stopwatch.now() + self.prior_seconds

    def diverged(self, step: int, problem: str) -> None:
        from .events import TrainFinished

        keep = f"last good checkpoint: {self.last_ckpt}" if self.last_ckpt else "no checkpoint was written"
        msg = (f"training diverged by step {step} ({problem}); {keep}. "
               "Try lower learning rates or another --seed.")
        self.bus.emit(TrainFinished(step, str(self.run_dir), self.seconds(), "diverged", msg))
        raise TrainingDiverged(msg)

    def stalled(self, step: int, optimizers: dict) -> None:
        """The render no longer depends on any parameter (every primitive culled): say why."""
        _, _, problem = self.window.read(optimizers)
        self.diverged(step, problem or "nothing the model renders depends on its parameters any more")

    def log(self, step: int, renderer: "Renderer", optimizers: dict, lrs: dict, where: str) -> None:
        """Read the window back (the one sync), refuse NaN/Inf and a collapse, emit StepDone."""
        from .events import StepDone

        n = self.window.n
        loss, psnr, problem = self.window.read(optimizers)
        if problem:
            self.diverged(step, f"{problem}; {where}")
        if n and (problem := self.collapse.update(psnr)):
            self.diverged(step, f"{problem}; {where}")
        if n:
            t = self.stopwatch.now()
            self.bus.emit(StepDone(step=step, total_steps=self.cfg.steps, loss=loss, psnr=psnr,
                                   stats=self.world.stats(renderer), lrs=lrs,
                                   steps_per_sec=n / max(t - self.window.t0, 1e-9),
                                   train_seconds=t + self.prior_seconds))
            self.window.t0 = t

    def checkpoint(self, step: int, renderer: "Renderer", optimizers: dict, lrs: dict) -> None:
        import random

        import torch

        from . import runs
        from .events import CheckpointSaved

        self.stopwatch.pause()
        self.log(step, renderer, optimizers, lrs, "at a checkpoint")  # never write a bad checkpoint
        # Several processes: the whole model and optimizer state, gathered on rank 0.
        whole = self.world.whole(renderer)
        optimizer_states = self.world.gather_optimizers(optimizers, self.sharded)
        if not self.world.is_main:
            self.stopwatch.start()
            return
        ck = {
            "method": self.cfg.method, "preset": self.cfg.preset, "model": whole.state_dict(),
            "optimizers": optimizer_states,
            "config": self.cfg.to_json(), "normalization": self.scene.normalization.to_json(),
            "train_seconds": float(self.stopwatch.total + self.prior_seconds),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "python": random.getstate()},
        }
        self.last_ckpt = runs.save_checkpoint(self.run_dir, step, ck, self.cfg.keep_checkpoints)
        self.bus.emit(CheckpointSaved(step, str(self.last_ckpt)))
        self.stopwatch.start()


def restore(ck: dict, optimizers: dict, device, world: "World", sharded: set[str]) -> tuple[int, float]:
    """Optimizer and RNG state from a checkpoint -> (step, training seconds so far). Of
    several processes, each takes its rows of the sharded groups' state."""
    import random

    import torch

    states = world.local_optimizers(ck["optimizers"], optimizers, sharded)
    for k, o in optimizers.items():
        o.load_state_dict(states[k])
    rng = ck.get("rng") or {}
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng.get("python") is not None:
        random.setstate(_as_tuples(rng["python"]))
    return int(ck["step"]), float(ck.get("train_seconds", 0.0))


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def dataset_folder(scene) -> Optional[Path]:
    return None if scene.format == "demo" or scene.root is None else Path(scene.root)


def finish(renderer: "Renderer", scene, cfg: "TrainConfig", book: Bookkeeping, step: int,
           device, processes: Optional[dict] = None) -> dict:
    """Final outputs: the method's artefact, test metrics and renders, metrics.json.
    `processes`: what several processes add (their count and peak memory each)."""
    from . import runs
    from .eval import evaluate
    from .events import EvalDone, TrainFinished

    run_dir, seconds = book.run_dir, book.stopwatch.total + book.prior_seconds
    renderer.write_outputs(run_dir, scene.normalization)
    m = evaluate(renderer, scene, device=device,
                 renders_dir=run_dir / "renders" / "test" if cfg.save_renders else None)
    mem_all, mem_kind = peak_memory(device)
    mem = mem_all if book.train_peak is None else book.train_peak
    metrics = {
        "psnr": m["psnr"], "cc_psnr": m["cc_psnr"], "ssim": m["ssim"], "lpips": m["lpips"],
        "num_test_views": m["num_test_views"],
        **renderer.metrics(), "method": cfg.method, "steps": step, "train_seconds": round(seconds, 3),
        "peak_memory_gb": round(mem, 4), "peak_memory_with_eval_gb": round(mem_all, 4),
        "peak_memory_kind": mem_kind, "device": str(device),
        "lpips_note": m["lpips_note"], "views": m["views"], **(processes or {}),
    }
    runs.atomic_write_json(run_dir / "metrics.json", metrics)
    book.bus.emit(EvalDone(step, m["psnr"], m["ssim"], m["lpips"], m["num_test_views"]))
    psnr = "n/a" if m["psnr"] is None else f"{m['psnr']:.2f} dB"
    stats = ", ".join(f"{v:,} {k}" if isinstance(v, int) else f"{k} {v}" for k, v in renderer.stats().items())
    book.bus.emit(TrainFinished(step, str(run_dir), seconds, "done",
                                f"done: {step:,} steps in {seconds:.1f} s of training, "
                                f"test PSNR {psnr}, {stats} -> {run_dir}"))
    return metrics


class _NoLog:
    """What ranks other than 0 of several processes log: nothing (rank 0 writes the run)."""

    def close(self) -> None:
        pass


def open_run_folder(run_dir: Path, cfg: "TrainConfig", scene, bus: "EventBus", new: bool,
                    main: bool = True):
    """Check (a new run) and fill the run folder's config.json and scene.json; subscribe
    and return the JSONL log. Not rank 0 of several processes: nothing."""
    from . import runs
    from .events import JsonlLogger, Note

    if not main:
        return _NoLog()
    if new:
        runs.prepare_output(run_dir, overwrite=cfg.overwrite, dataset=dataset_folder(scene))
    for w in scene.warnings:
        bus.emit(Note(w, "warning"))
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(run_dir / "config.json", cfg.to_json())
    runs.atomic_write_json(run_dir / "scene.json", runs.scene_to_json(scene))
    log = JsonlLogger(run_dir / "log.jsonl")
    bus.subscribe(log)
    return log


def process_metrics(world: "World", device) -> dict:
    """Several processes (collective): their count and each one's peak memory, for metrics.json."""
    if world.size == 1:
        return {}
    return {"processes": world.size,
            "peak_memory_gb_per_process": [round(v, 4) for v in world.gather_floats(peak_memory(device)[0])]}


def linger(server) -> None:
    """After training, keep the live viewer up until Ctrl-C."""
    print(f"training finished; the viewer keeps serving at {getattr(server, 'url', '')} "
          "(Ctrl-C to quit)", file=sys.stderr)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


# ---- the training loop ----------------------------------------------------------------
def train(cfg: "TrainConfig", *, bus: Optional["EventBus"] = None, resume: Optional[Path] = None,
          run_dir: Optional[Path] = None) -> TrainResult:
    """Train `cfg` into a run folder (new, or `resume`d from its newest good checkpoint)."""
    import random

    import torch

    from splatlab.rasterizer.optim import step_all
    from splatlab.renderers import UnknownMethod, get_renderer

    from . import events as ev
    from . import runs
    from .data import load_data, make_sampler, resolve_device
    from .distributed import World
    from .eval import evaluate
    from .live import start_viewer
    from .losses import batch_loss, warm_up

    bus = bus or ev.EventBus()
    if cfg.steps < 1:
        raise UserError(f"--steps must be positive, got {cfg.steps}")
    try:
        method = get_renderer(cfg.method)
    except UnknownMethod as e:
        raise UserError(str(e)) from None
    world, device_name = World.start(cfg)  # several processes: this one's rank and device
    device = resolve_device(device_name)
    ckpt = None
    if resume is not None:
        path, ckpt = runs.newest_good_checkpoint(resume, device)
        if world.is_main:
            runs.set_aside_newer(resume, path)
    if device.type == "cpu":
        # Bit-reproducible CPU runs for a seed: multi-threaded accumulating index ops
        # (index_put_/scatter with accumulate) sum in thread-timing order otherwise; two runs of
        # the same command gave different Gaussian counts. Ops without a deterministic kernel
        # warn rather than fail. CUDA stays fast and non-reproducible (README).
        torch.use_deterministic_algorithms(True, warn_only=True)
        keep_freed_host_memory()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    scene = load_data(cfg)
    if not scene.train_idx:
        raise UserError("the scene has no training views", scene.root)
    run_dir = world.broadcast(Path(resume or run_dir or cfg.output or default_run_dir(scene.name)))
    log = open_run_folder(run_dir, cfg, scene, bus, new=resume is None, main=world.is_main)

    # Renderer and optimizers: fresh, or exactly as checkpointed.
    renderer = method.build(scene, cfg, device) if ckpt is None else method.from_state(ckpt["model"], device)
    renderer.setup_training(cfg, scene)
    world.shard(renderer)  # several processes: keep this rank's share of the model
    groups = renderer.param_groups(cfg)
    sharded = {g.name for g in groups if g.sharded and world.size > 1}
    optimizers = make_optimizers(groups)
    world.replicate(optimizers, sharded)
    start, prior_seconds = (restore(ckpt, optimizers, device, world, sharded) if ckpt is not None
                            else (0, 0.0))
    sampler = make_sampler(method.batch_kind, scene, device, seed=cfg.seed,
                           random_background=cfg.random_background,
                           rays_per_batch=getattr(cfg, "rays_per_batch", None),  # a rays method's field
                           masks=getattr(cfg, "masks", None),  # a method's field where it takes masks
                           rank=world.rank, world_size=world.size,
                           coarse_to_fine=getattr(cfg, "coarse_to_fine", 0))  # an image method's field
    if device.type == "cuda" and uses_conv_ssim(cfg, method, sampler):
        # A scene's image sizes are fixed, so cuDNN can pick its fastest SSIM convolutions once.
        # Only then: benchmarking tries every algorithm with its own workspace, which
        # raises the peak memory, and the fused loss kernel needs no convolution.
        torch.backends.cudnn.benchmark = True
    book = Bookkeeping(cfg, run_dir, bus, device, scene, prior_seconds, runs.latest_checkpoint(run_dir),
                       world, sharded)
    stop = StopFlag()
    server, hookup = start_viewer(cfg, scene, renderer, start, bus, run_dir) if cfg.viewer else (None, None)
    wants_model = bus.wants(ev.ModelUpdated)
    bus.emit(ev.TrainStarted(
        run_dir=str(run_dir), scene=scene.name, method=cfg.method, preset=cfg.preset,
        device=str(device), start_step=start, total_steps=cfg.steps, num_train=len(scene.train_idx),
        num_test=len(scene.test_idx), stats=world.stats(renderer)))

    if method.batch_kind == "image" and cfg.ssim_lambda > 0:  # JIT-compile the fused loss off the clock
        cams = scene.cameras[scene.train_idx]
        warm_up({(int(w), int(h)) for w, h in zip(cams.width, cams.height)}, device, cfg.ssim_lambda, cfg.rgb_loss)
    reason, step, lrs = "done", start, {}
    stop.install()
    book.stopwatch.start()
    try:
        for step in range(start, cfg.steps):
            lrs = set_learning_rates(optimizers, groups, step, cfg.steps)
            batch = sampler.next(step)
            out = renderer.train_render(batch, step)
            renderer.before_backward(step, out, optimizers)
            loss, mse = batch_loss(out.rgb, batch, cfg.rgb_loss, cfg.ssim_lambda)
            for extra in renderer.extra_losses(step, out, batch).values():
                loss = loss + extra
            book.window.add(loss, mse)
            if not loss.requires_grad:  # host metadata: nothing rendered depends on a parameter
                book.stalled(step + 1, optimizers)
            loss.backward()
            world.reduce_gradients(optimizers, sharded)
            step_all(optimizers)  # each optimizer's step() and zero_grad, fused Adams together
            note = renderer.after_step(step, out, optimizers)
            if method.batch_kind == "rays":
                sampler.resize(renderer.rays_wanted(sampler.R))
            done = step + 1
            if note:
                bus.emit(ev.RefineDone(done, note))
                if num_parameters(optimizers) == 0:
                    book.diverged(done, "the model has no parameters left, e.g. every Gaussian was pruned")
            if wants_model:
                bus.emit(ev.ModelUpdated(done, renderer))
            if hookup is not None:
                hookup.hold(renderer, done, book.stopwatch, stop)
            if world.agree_to_stop(stop, at_log_step=done % cfg.log_every == 0):
                reason, step = "interrupted", done
                book.checkpoint(done, renderer, optimizers, lrs)
                break
            if done % cfg.log_every == 0:
                book.log(done, renderer, optimizers, lrs, "at a log step")
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                book.checkpoint(done, renderer, optimizers, lrs)
            if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < cfg.steps:
                book.stopwatch.pause()
                whole = world.whole(renderer)
                if world.is_main:
                    m = evaluate(whole, scene, device=device)
                    bus.emit(ev.EvalDone(done, m["psnr"], m["ssim"], m["lpips"], m["num_test_views"]))
                book.stopwatch.start()
        if reason == "done":
            step = cfg.steps
            # As the peer measures it: the training steps' peak, before the final
            # checkpoint and evaluation (metrics.json also has the peak with them).
            book.train_peak = peak_memory(device)[0]
            if start < cfg.steps:
                book.checkpoint(cfg.steps, renderer, optimizers, lrs)
    except BaseException:
        log.close()
        if server is not None:
            server.stop()
        raise
    finally:
        book.stopwatch.pause()
        stop.restore()

    if reason == "interrupted":
        msg = f"interrupted at step {step:,}; checkpoint saved. Resume with: splatlab train --resume {run_dir}"
        bus.emit(ev.TrainFinished(step, str(run_dir), book.stopwatch.total + prior_seconds, reason, msg))
        log.close()
        if server is not None:
            server.stop()
        world.close()
        return TrainResult(run_dir, step, reason, 130 if stop.signum in (signal.SIGINT, None) else 143)
    processes = process_metrics(world, device)
    whole = world.whole(renderer)
    metrics = finish(whole, scene, cfg, book, step, device, processes) if world.is_main else None
    log.close()
    world.close()
    if server is not None:
        linger(server)
    return TrainResult(run_dir, step, reason, 0, metrics)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))
