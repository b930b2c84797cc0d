"""Several processes, one run: what the training loop does differently on each rank.

`splatlab train --gpus N` starts N worker processes itself (`launch`), with the
environment torchrun would give them; `torchrun --nproc_per_node N -m splatlab.app train
...` starts them directly. Every worker runs the same loop (app/train.py), on cuda:LOCAL_RANK
over NCCL, or on the CPU over gloo, and through the `World` below:

- the model is sharded (the renderer's `shard`, renderers/base.py; a method without one
  trains in one process only) and every render is collective;
- each rank draws its own image each step (a batch of N images over the ranks, data.py);
- the gradients of parameter groups that are not sharded are summed over the ranks;
- the loss/PSNR window is averaged over the ranks at log steps, where the ranks also agree
  on divergence and on stopping (an interrupt takes effect at the next log step);
- rank 0 alone writes the run folder, the log, the progress display, the checkpoints and
  the final outputs, from the whole model gathered from every rank (`whole`); checkpoints
  hold the whole model and the whole optimizer state, so any number of processes resumes
  them (each takes its slice); the ranks meet at a barrier at the end.
One process (`size == 1`) does none of this: no collective, no synchronisation.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# NVLink multicast (NVLS / symmetric memory) stays off on the GPU machines (device KINDS.md).
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def _cuda_device(name: str) -> bool:
    import torch

    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module joined the process group (and leaves it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- joining --------------------------------------------------------------------------
    @classmethod
    def start(cls, cfg) -> tuple["World", str]:
        """(world, this rank's device name) from torchrun's environment (WORLD_SIZE > 1),
        joining the process group; one process otherwise."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls(), cfg.device
        import torch
        import torch.distributed as dist

        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if cfg.viewer:
            raise UserError("--viewer is not available with several processes (each holds part of the model)")
        device = cfg.device
        cuda = _cuda_device(device)
        if cuda:
            if device not in ("auto", "cuda"):
                raise UserError(f"--device {device}: with several processes each takes cuda:LOCAL_RANK "
                                "(choose the GPUs with CUDA_VISIBLE_DEVICES)")
            if local >= torch.cuda.device_count():
                raise UserError(f"process {rank} wants cuda:{local}, but {torch.cuda.device_count()} "
                                "CUDA GPU(s) are visible")
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
            for k, v in NCCL_ENV.items():
                os.environ.setdefault(k, v)
        else:
            device = "cpu"
            if "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores
                local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
        owns = not dist.is_initialized()
        if owns:
            if cuda:
                dist.init_process_group("nccl", device_id=torch.device(device))
            else:
                dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local, owns), device

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Barrier, then leave the process group (when this module joined it)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        dist.barrier()
        if self.owns_group:
            dist.destroy_process_group()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable object)."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ---- the model ----------------------------------------------------------------------------
    def shard(self, renderer) -> None:
        """Keep this rank's share of the model (after `setup_training`)."""
        if self.size == 1:
            return
        shard = getattr(renderer, "shard", None)
        if shard is None:
            raise UserError(f"--method {renderer.name} trains in one process only "
                            "(several processes shard a splat model)")
        try:
            shard(self.rank, self.size)
        except ValueError as e:
            raise UserError(str(e)) from None

    def whole(self, renderer):
        """Collective: the whole model on rank 0 (None on the others); one process: `renderer`."""
        return renderer if self.size == 1 else renderer.gathered()

    def stats(self, renderer) -> dict:
        """The renderer's numbers, counts summed over the shards (collective when sharded)."""
        stats = renderer.stats()
        if self.size == 1:
            return stats
        import torch
        import torch.distributed as dist

        keys = [k for k, v in stats.items() if isinstance(v, int) and not isinstance(v, bool)]
        if keys:
            t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=renderer.device)
            dist.all_reduce(t)
            stats.update({k: int(v) for k, v in zip(keys, t.tolist())})
        return stats

    # ---- gradients and optimizer state ------------------------------------------------------
    @staticmethod
    def _params(optimizers: dict, names) -> list:
        return [p for n in names for g in optimizers[n].param_groups for p in g["params"]]

    def replicate(self, optimizers: dict, sharded: set[str]) -> None:
        """Rank 0's values of the parameters every rank holds whole: an identical start."""
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for p in self._params(optimizers, sorted(set(optimizers) - sharded)):
                dist.broadcast(p.data, src=0)

    def reduce_gradients(self, optimizers: dict, sharded: set[str]) -> None:
        """Sum over the ranks the gradients of the parameters every rank holds whole (each
        rank's loss covers its own images; per-image parameters get theirs from one rank)."""
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        params = self._params(optimizers, sorted(set(optimizers) - sharded))
        if not params:
            return
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for p, g in zip(params, flat.split([g.numel() for g in grads])):
            p.grad = g.view_as(p)

    def gather_optimizers(self, optimizers: dict, sharded: set[str]) -> Optional[dict]:
        """Collective: every optimizer's state_dict on rank 0, the per-row state of the
        sharded groups (Adam's moments) concatenated in rank order like the model."""
        states = {k: o.state_dict() for k, o in optimizers.items()}
        if self.size == 1:
            return states
        from splatlab.rasterizer.distributed import gather_rows

        for name in sorted(sharded):
            # state_dict() shares the optimizer's live per-parameter dicts: build new ones.
            sd = states[name] = {**states[name], "state": dict(states[name]["state"])}
            for i, p in enumerate(self._params(optimizers, [name])):
                entry = dict(sd["state"].get(i, {}))
                for key in sorted(entry):
                    v = entry[key]
                    if hasattr(v, "shape") and v.shape == p.shape:
                        entry[key] = gather_rows(v)
                sd["state"][i] = entry
        return states if self.is_main else None

    def local_optimizers(self, states: dict, optimizers: dict, sharded: set[str]) -> dict:
        """A checkpoint's optimizer states (whole) -> this rank's: the slice of every
        sharded group's per-row state matching this rank's rows of the model."""
        if self.size == 1:
            return states
        from splatlab.rasterizer.distributed import shard_rows

        states = dict(states)
        for name in sharded:
            sd = dict(states[name])
            sd["state"] = {i: dict(s) for i, s in sd["state"].items()}
            for i, p in enumerate(self._params(optimizers, [name])):
                entry = sd["state"].get(i, {})
                for key, v in entry.items():
                    if hasattr(v, "shape") and v.dim() == p.dim() > 0 and v.shape[1:] == p.shape[1:]:
                        v = v[shard_rows(v.shape[0], self.rank, self.size)]
                        if v.shape != p.shape:
                            raise UserError(f"the checkpoint's {name} optimizer state does not match its model")
                        entry[key] = v
            states[name] = sd
        return states

    # ---- the loop's bookkeeping ----------------------------------------------------------------
    def mean(self, t: "torch.Tensor") -> "torch.Tensor":
        """All-reduced mean over the ranks (the loss window at log steps)."""
        if self.size == 1:
            return t
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
        return t / self.size

    def agree_to_stop(self, flag: Any, at_log_step: bool) -> bool:
        """One process: `flag` (truthy: stop). Several: checked at log steps, where a stop on any rank
        stops every rank (the ranks must take the same steps)."""
        if self.size == 1:
            return bool(flag)
        if not at_log_step:
            return False
        import torch
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def gather_floats(self, value: float) -> list[float]:
        """Every rank's `value` (rank order), on every rank."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, float(value))
        return out


# ---- `splatlab train --gpus N` ----------------------------------------------------------------
def wants_launch(cfg) -> bool:
    """--gpus N > 1, and not already a worker (torchrun or our launcher set WORLD_SIZE)."""
    return getattr(cfg, "gpus", 1) > 1 and "WORLD_SIZE" not in os.environ


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(index: int, fn: Callable, args: tuple, size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index),
                      LOCAL_RANK=str(index), WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size))
    code = fn(*args)
    sys.stdout.flush()
    if code:
        sys.exit(code)


def launch(fn: Callable[..., int], args: tuple, gpus: int, device: str) -> int:
    """Run `fn(*args) -> exit code` in `gpus` processes on this machine (one per GPU, NCCL;
    CPU processes over gloo when CUDA is not used). Returns the first non-zero exit code."""
    import signal

    import torch
    import torch.multiprocessing as mp

    if _cuda_device(device):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < gpus:
            raise UserError(f"--gpus {gpus}: {have} CUDA GPU(s) here")
        os.environ.update(NCCL_ENV)
    else:
        print(f"no CUDA GPU: --gpus {gpus} trains in {gpus} CPU processes (gloo)", file=sys.stderr)
    ctx = mp.start_processes(_worker, args=(fn, args, gpus, _free_port()), nprocs=gpus, join=False,
                             start_method="spawn")
    # Ctrl-C reaches every worker (one process group): they stop together at their next log
    # step, checkpoint and exit; this parent only waits for them.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while not ctx.join(grace_period=30):
            pass
    except mp.ProcessExitedException as e:
        return int(e.exit_code) if e.exit_code and e.exit_code > 0 else 1
    except mp.ProcessRaisedException as e:  # a worker's unexpected error: its traceback
        print(e, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    return 0


__all__ = ["NCCL_ENV", "World", "launch", "wants_launch"]
