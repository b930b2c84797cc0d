"""Several processes (torch.distributed over gloo, real processes on 127.0.0.1): the
sharded render against the single-process render of the whole model, forward and
backward; the collectives; training, checkpoints across process counts, `--gpus`."""

from __future__ import annotations

import pytest
import torch

from dist_util import run_ranks

# Tolerance of the sharded render against the single-process one (float32): the same
# per-camera arithmetic on the same Gaussians, in the same order, so only summation order
# (einsum over a different N, gradient sums across ranks) differs.
IMAGE_ATOL = 1e-5
GRAD_RTOL = 1e-4  # relative to the largest gradient entry of each tensor


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    err = (a - b).abs().max() / scale
    assert err <= GRAD_RTOL, f"{what}: max error {err:.2e} of the largest entry {scale:.2e}"


def _sharded_render_matches(rank: int, size: int, sh_degree, render_mode: str, device: str = "cpu") -> None:
    """On "cpu" the torch twin; on "cuda" gsplat's distributed mode against gsplat."""
    from splatlab.rasterizer import rasterize
    from splatlab.rasterizer.distributed import shard_rows
    from test_rasterizer import make_scene

    dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    means, quats, scales, opac, colors, viewmats, Ks = (t.to(dev) for t in make_scene(
        seed=3, n=60, n_cams=size, width=24, height=16, sh_degree=sh_degree, dtype=torch.float32))
    bg = torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.3]], device=dev)[:size]
    kw = dict(sh_degree=sh_degree, render_mode=render_mode)
    w = torch.rand(size, 16, 24, 4 if render_mode == "RGB+ED" else 3,
                   generator=torch.Generator().manual_seed(9)).to(dev)
    params = [means, quats, scales, opac, colors]

    # Single process, the whole model, every rank's camera.
    full = [p.clone().requires_grad_() for p in params]
    out = rasterize(*full, viewmats, Ks, 24, 16, backgrounds=bg, **kw)
    out.means2d.retain_grad()
    (out.colors * w).sum().backward()

    # This rank: its shard and its own camera.
    rows = shard_rows(len(means), rank, size)
    mine = [p[rows].clone().requires_grad_() for p in params]
    sh = rasterize(*mine, viewmats[rank : rank + 1], Ks[rank : rank + 1], 24, 16,
                   backgrounds=bg[rank : rank + 1], distributed=True, **kw)
    assert sh.means2d.shape == (size, rows.stop - rows.start, 2)  # own Gaussians, every camera
    sh.means2d.retain_grad()
    (sh.colors * w[rank : rank + 1]).sum().backward()

    err = (sh.colors[0] - out.colors[rank].detach()).abs().max()
    assert err <= IMAGE_ATOL, f"rank {rank}: image differs by {err:.2e}"
    assert torch.equal(sh.radii, out.radii[:, rows])
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), mine, full):
        _close(a.grad, b.grad[rows], f"rank {rank} d/d{name}")
    # Densification reads this: each Gaussian's screen-space gradient in every camera.
    _close(sh.means2d.grad, out.means2d.grad[:, rows], f"rank {rank} d/dmeans2d")


def test_sharded_render_equals_whole_model_render_rgb_sh():
    run_ranks(_sharded_render_matches, 2, 1, "RGB")


def test_sharded_render_equals_whole_model_render_plain_colors_depth():
    run_ranks(_sharded_render_matches, 2, None, "RGB+ED")


def _two_gpus() -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs ({torch.cuda.device_count()} here): run on a 2-GPU machine")


@pytest.mark.cuda
def test_gsplat_distributed_render_equals_whole_model_render_on_two_gpus():
    _two_gpus()
    run_ranks(_sharded_render_matches, 2, 3, "RGB", "cuda", backend="nccl")


@pytest.mark.cuda
def test_gsplat_distributed_in_a_one_process_group_equals_plain_render():
    """What one GPU can check of the CUDA path: our plumbing into gsplat's distributed mode."""
    run_ranks(_sharded_render_matches, 1, 3, "RGB", "cuda", backend="nccl")


def _world_pieces(rank: int, size: int) -> None:
    """World's gradient sum, replication and the optimizer-state gather/slice round trip."""
    import torch.distributed as dist

    from splatlab.app.distributed import World
    from splatlab.rasterizer.distributed import shard_rows

    world = World(rank=rank, size=size)
    rows = [3, 5][rank]  # uneven shards
    g = torch.Generator().manual_seed(rank)
    shard = torch.nn.Parameter(torch.randn(rows, 2, generator=g))
    whole = torch.nn.Parameter(torch.randn(4, generator=g))  # held whole: rank 0's value wins
    opts = {"means": torch.optim.Adam([shard], lr=0.1), "appearance": torch.optim.Adam([whole], lr=0.1)}
    world.replicate(opts, {"means"})
    got = [torch.empty(4) for _ in range(size)]
    dist.all_gather(got, whole.detach().clone())
    assert torch.equal(got[0], got[1])

    shard.grad = torch.full((rows, 2), float(rank + 1))
    whole.grad = None if rank == 1 else torch.full((4,), 2.0)  # unused on rank 1: counts as zero
    world.reduce_gradients(opts, {"means"})
    assert torch.equal(whole.grad, torch.full((4,), 2.0))  # summed over ranks
    assert torch.equal(shard.grad, torch.full((rows, 2), float(rank + 1)))  # own rows untouched
    for o in opts.values():
        o.step()
    mine = {k: v.clone() for k, v in opts["means"].state[shard].items()}

    states = world.broadcast(world.gather_optimizers(opts, {"means"}))  # as a checkpoint holds them
    gathered = states["means"]["state"][0]
    offset = [0, 3][rank]
    for key in ("exp_avg", "exp_avg_sq"):  # both shards, in rank order
        assert gathered[key].shape == (8, 2) and torch.equal(gathered[key][offset : offset + rows], mine[key])
    assert torch.equal(opts["means"].state[shard]["exp_avg"], mine["exp_avg"])  # live state untouched

    # Resumed, the model is split evenly again (4 + 4 rows): each rank takes those rows.
    rows_now = shard_rows(8, rank, size)
    fresh = torch.nn.Parameter(torch.zeros(rows_now.stop - rows_now.start, 2))
    resumed = {"means": torch.optim.Adam([fresh], lr=0.1), "appearance": opts["appearance"]}
    back = world.local_optimizers(states, resumed, {"means"})["means"]
    resumed["means"].load_state_dict(back)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(resumed["means"].state[fresh][key], gathered[key][rows_now])


def test_world_sums_shared_gradients_and_round_trips_optimizer_state():
    run_ranks(_world_pieces, 2)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


# Tiny but real: 40x30 demo views, 600 initial Gaussians, densification every 6 steps.
TINY_ARGS = ["--preset", "cpu", "--downscale", "4", "--init-max-points", "600", "--sh-degree", "1",
             "--sh-degree-interval", "10",
             "--refine-start", "4", "--refine-every", "6", "--refine-stop", "30", "--grow-grad2d", "0.001",
             "--log-every", "10", "--checkpoint-every", "10", "--no-save-renders"]


def _cpu_env() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _checkpoint(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step_{step:07d}.pt", weights_only=True)


def _started(run: Path) -> list[dict]:
    return [e for e in _events(run) if e["event"] == "TrainStarted"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """`splatlab train --gpus 2` on a machine without CUDA: two gloo CPU processes."""
    run = tmp_path_factory.mktemp("dist") / "two"
    r = subprocess.run([sys.executable, "-m", "splatlab.app", "train", "demo", "--gpus", "2", "--steps", "30",
                        *TINY_ARGS, "--output", str(run)], capture_output=True, text=True, timeout=600,
                       env=_cpu_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no CUDA GPU: --gpus 2 trains in 2 CPU processes (gloo)" in r.stderr
    return run


@pytest.mark.slow
def test_two_processes_train_the_demo_into_one_run_folder(two_process_run):
    run = two_process_run
    events = _events(run)
    kinds = [e["event"] for e in events]
    # Written once, by rank 0: one start, one finish, each log step once.
    assert kinds.count("TrainStarted") == 1 and kinds.count("TrainFinished") == 1
    assert [e["step"] for e in events if e["event"] == "StepDone"] == [10, 20, 30]
    refines = [e for e in events if e["event"] == "RefineDone"]
    assert refines and all("rank 0's shard" in e["note"] for e in refines)  # densified per shard
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == [
        "step_0000010.pt", "step_0000020.pt", "step_0000030.pt"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["processes"] == 2 and len(m["peak_memory_gb_per_process"]) == 2
    assert m["steps"] == 30 and m["psnr"] is not None

    # The checkpoint holds the whole model (both shards) and the whole optimizer state.
    ck = _checkpoint(run, 30)
    n = ck["model"]["splats"]["means"].shape[0]
    last_step = [e for e in events if e["event"] == "StepDone"][-1]
    assert n == m["num_gaussians"] == last_step["stats"]["Gaussians"]  # counts summed over the shards
    assert n > 600  # grew from the initial points (each shard densified)
    for name, t in ck["model"]["splats"].items():
        state = ck["optimizers"][name]["state"][0]
        assert state["exp_avg"].shape == t.shape and state["exp_avg_sq"].shape == t.shape, name
    assert ck["model"]["strategy_state"]["grad2d"].shape == (n,)

    from splatlab.renderers.splat.io import read_ply

    assert read_ply(run / "splat.ply").num_gaussians == n  # the gathered model, exported


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run, tmp_path):
    import shutil

    from splatlab.app.events import EventBus, TrainStarted
    from splatlab.app.train import parse_args, train

    run = tmp_path / "resumed"
    shutil.copytree(two_process_run, run)
    n = _checkpoint(run, 30)["model"]["splats"]["means"].shape[0]
    cfg, resume = parse_args(["--resume", str(run), "--steps", "36", "--gpus", "1"])
    started: list = []
    bus = EventBus()
    bus.subscribe(started.append, TrainStarted)
    result = train(cfg, bus=bus, resume=resume)
    assert result.exit_code == 0 and result.step == 36
    assert started[0].start_step == 30 and started[0].stats["Gaussians"] == n


@pytest.mark.slow
def test_one_process_checkpoint_resumes_under_torchrun_with_two(tmp_path):
    """1 -> 2 processes, through `torchrun --nproc_per_node 2 -m splatlab.app train`."""
    from splatlab.app.train import parse_args, train

    run = tmp_path / "one"
    cfg, _ = parse_args(["demo", "--steps", "20", *TINY_ARGS, "--output", str(run)])
    assert train(cfg).exit_code == 0
    n = _checkpoint(run, 20)["model"]["splats"]["means"].shape[0]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "splatlab.app", "train", "--resume", str(run), "--steps", "30"],
                       capture_output=True, text=True, timeout=600, env=_cpu_env())
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = _started(run)[-1]
    assert resumed["start_step"] == 20 and resumed["stats"]["Gaussians"] == n
    m = json.loads((run / "metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 30
    ck = _checkpoint(run, 30)
    assert ck["model"]["splats"]["means"].shape[0] == m["num_gaussians"]


# ---------------------------------------------------------------------------------------
# Pieces, without processes
# ---------------------------------------------------------------------------------------
def test_each_rank_draws_its_own_view_of_one_shuffled_sequence():
    from splatlab.app.data import ImageSampler
    from splatlab.scenes import load_scene

    scene = load_scene("demo", downscale=8)
    one = ImageSampler(scene, "cpu", seed=5)
    ranks = [ImageSampler(scene, "cpu", seed=5, rank=r, world_size=2) for r in range(2)]
    n = len(scene.train_idx)
    for step in range(n):  # two epochs of the single-process sequence
        views = [int(s.next(step).image_idx) for s in ranks]
        assert views == [int(one.next(2 * step).image_idx), int(one.next(2 * step + 1).image_idx)]


def test_methods_without_shards_and_the_viewer_refuse_several_processes():
    import dataclasses

    from splatlab.app.config import preset
    from splatlab.app.distributed import World
    from splatlab.app.errors import UserError

    class Whole:
        name = "nerf"

        def stats(self):
            return {}

    with pytest.raises(UserError, match="--method nerf trains in one process only"):
        World(rank=0, size=2).shard(Whole())
    World().shard(Whole())  # one process: nothing to shard
    os.environ_backup = dict(os.environ)
    try:
        os.environ.update(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
        with pytest.raises(UserError, match="--viewer is not available with several processes"):
            World.start(dataclasses.replace(preset("cpu"), viewer=True))
    finally:
        os.environ.clear()
        os.environ.update(os.environ_backup)
